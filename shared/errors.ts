/**
 * Named error classes. Step Functions matches `Retry`/`Catch` on the error *name*
 * (`errorType` of a Lambda failure is the thrown error's `name`), so every class sets
 * `name` explicitly and never relies on minified constructor names.
 *
 * Transient errors are retried by the state machine; fatal ones go to a Fail state with the
 * message as the cause. Each message says what happened and what to do about it.
 */

export abstract class DataSyncError extends Error {
  /** true when retrying the same request later can succeed. */
  abstract readonly transient: boolean;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The upstream (or the network in front of it) failed in a way that may pass: 5xx, timeout, reset, truncated or non-JSON body. */
export class UpstreamUnavailableError extends DataSyncError {
  override readonly name = 'UpstreamUnavailableError';
  readonly transient = true;
  constructor(
    message: string,
    readonly status?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** HTTP 429. Carries how long the server asked us to wait. */
export class RateLimitedError extends DataSyncError {
  override readonly name = 'RateLimitedError';
  readonly transient = true;
  constructor(
    message: string,
    /** Seconds from the Retry-After header (falls back to X-RateLimit-Reset). */
    readonly retryAfterSeconds: number,
    readonly rateLimit?: RateLimitInfo,
  ) {
    super(message);
  }
}

/** 400 CURSOR_EXPIRED. */
export class CursorExpiredError extends DataSyncError {
  override readonly name = 'CursorExpiredError';
  readonly transient = false;
}

/** 400 CURSOR_INVALID_FORMAT, or a 502 answered to a request that carried a cursor, or a cursor that does not decode locally. */
export class CursorInvalidError extends DataSyncError {
  override readonly name = 'CursorInvalidError';
  readonly transient = false;
}

/** The server refused both the refreshed cursor and one rebuilt from the stored position: an operator must act. */
export class CursorRejectedError extends DataSyncError {
  override readonly name = 'CursorRejectedError';
  readonly transient = false;
}

/** 401/403: missing or wrong API key. Retrying cannot help. */
export class AuthError extends DataSyncError {
  override readonly name = 'AuthError';
  readonly transient = false;
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** Another execution holds a live lease on the source. */
export class LeaseHeldError extends DataSyncError {
  override readonly name = 'LeaseHeldError';
  readonly transient = false;
}

/** The checkpoint moved under us (optimistic concurrency): another invocation committed first. */
export class CheckpointConflictError extends DataSyncError {
  override readonly name = 'CheckpointConflictError';
  readonly transient = true;
}

/** Configuration (env, CLI options, construct props) is missing or malformed. */
export class ConfigError extends DataSyncError {
  override readonly name = 'ConfigError';
  readonly transient = false;
}

/** The upstream answered something that is not the documented API (unexpected status or shape) and retrying will not change it. */
export class UpstreamProtocolError extends DataSyncError {
  override readonly name = 'UpstreamProtocolError';
  readonly transient = false;
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

/** Rate-limit headers of one response. */
export interface RateLimitInfo {
  limit: number;
  remaining: number;
  /** Seconds until the window resets (the API sends seconds, not an epoch). May be fractional when a scaled simulator sends its exact header. */
  resetSeconds: number;
  /** Set when a header was unreadable, missing or capped: why, and the safe value taken instead (shared/pacing/rate-limit-headers.ts). */
  suspect?: string;
  /** 429s in a row up to this answer (a 429's backoff grows with it; kept in the checkpoint so a resume keeps backing off). */
  rejectedInARow?: number;
}

/**
 * Too little of the invocation's time is left to start another upstream request and still
 * write the page before the function times out. Transient: the state machine's retry starts a
 * fresh invocation with its full timeout.
 */
export class InvocationDeadlineError extends DataSyncError {
  override readonly name = 'InvocationDeadlineError';
  readonly transient = true;
}

/** Secrets Manager could not be reached or asked us to slow down (throttling, timeout, network). Retrying later can succeed. */
export class SecretsUnavailableError extends DataSyncError {
  override readonly name = 'SecretsUnavailableError';
  readonly transient = true;
}

/** An error class the functions throw; probing it needs only a message. */
export type DataSyncErrorClass = new (message: string, ...rest: never[]) => DataSyncError;

/**
 * The named errors of this module, for the state machine to derive its Retry and Catch lists
 * from each class's own `transient` flag: a class added here is retried or failed by construction.
 */
export const ERROR_CLASSES: readonly DataSyncErrorClass[] = [
  UpstreamUnavailableError,
  RateLimitedError,
  CursorExpiredError,
  CursorInvalidError,
  CursorRejectedError,
  AuthError,
  LeaseHeldError,
  CheckpointConflictError,
  ConfigError,
  UpstreamProtocolError,
  InvocationDeadlineError,
  SecretsUnavailableError,
];

/** The error name Step Functions matches on, and whether another attempt can cure it. */
export interface ErrorKind {
  readonly name: string;
  readonly transient: boolean;
}

/**
 * Reads `name` and `transient` from an instance, because both are instance fields: what a thrown
 * error carries is exactly what Step Functions sees.
 */
export function errorKinds(classes: readonly DataSyncErrorClass[]): ErrorKind[] {
  return classes.map((ErrorClass) => {
    const probe = new ErrorClass('probe');
    return { name: probe.name, transient: probe.transient };
  });
}
