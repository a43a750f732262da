import {
  type PageInput,
  type PlanInput,
  type PlanOutput,
  runPage,
  runPlan,
  type StepDeps,
  type StepInvocation,
  type StepOutput,
  stepInputSchema,
} from '#shared/step/index.ts';

/*
 * The step's two tasks driven with raw input, as the state machine sends it: parsed by the
 * front door's schema, then handed to the task itself so a test gets its typed output.
 */

/** One page of `state.chain`, from `{executionId, state}`. */
export function stepPage(deps: StepDeps, raw: unknown, invocation: StepInvocation = {}): Promise<StepOutput> {
  const input = stepInputSchema.parse(raw);
  if (input.action !== 'page') throw new Error(`stepPage runs one page, not the "${input.action}" action`);
  return runPage(deps, input as PageInput, invocation);
}

/** The Plan task, from `{executionId, action: 'plan', state}`. */
export function stepPlan(deps: StepDeps, raw: unknown, invocation: StepInvocation = {}): Promise<PlanOutput> {
  const input = stepInputSchema.parse(raw);
  if (input.action !== 'plan')
    throw new Error(`stepPlan runs the Plan task, not the "${input.action}" action`);
  return runPlan(deps, input as PlanInput, invocation);
}
