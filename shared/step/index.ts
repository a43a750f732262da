/*
 * The step's front door. The fetch-page function runs two tasks of the state machine, the Plan
 * task and one page of a chain; `runAction` parses the input once and hands the typed input to
 * the one that runs it. The rest is the contract (schemas, ports and the types they carry,
 * contract.ts) and the helpers other layers share (chains.ts, totals.ts). The algorithm lives
 * in plan.ts and page.ts, cursor recovery and retry in recovery.ts.
 */

import {
  type PageInput,
  type PlanInput,
  type PlanOutput,
  type StepDeps,
  type StepInput,
  type StepInvocation,
  type StepOutput,
  stepInputSchema,
} from './contract.ts';
import { runPage } from './page.ts';
import { runPlan } from './plan.ts';

export { chainKey, parseChainKey, ZERO_ID } from './chains.ts';
export * from './contract.ts';
export { runPage } from './page.ts';
export { runPlan } from './plan.ts';

/**
 * One invocation of the fetch-page function: the Plan task (`action: 'plan'`) or one page of a
 * chain. Both tasks of the state machine invoke the same function.
 */
export async function runAction(
  deps: StepDeps,
  rawInput: unknown,
  invocation: StepInvocation = {},
): Promise<StepOutput | PlanOutput> {
  const input = stepInputSchema.parse(rawInput);
  return isPlan(input) ? runPlan(deps, input, invocation) : runPage(deps, input as PageInput, invocation);
}

function isPlan(input: StepInput): input is PlanInput {
  return input.action === 'plan';
}
