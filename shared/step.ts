/*
 * The step's public surface, kept at this path for the modules that import it: the contract
 * (schemas, ports and the types they carry) lives in step/contract.ts, the algorithm in
 * step/run.ts, cursor recovery and retry in step/recovery.ts.
 */

export { chainKey, parseChainKey, ZERO_ID } from './step/chains.ts';
export * from './step/contract.ts';
export { runPlan } from './step/plan.ts';
export { runAction, runStep, type StepInvocation } from './step/run.ts';
