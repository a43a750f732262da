/*
 * Integer hashing for the simulator's data set. Every derived value (id, session, type,
 * timestamp jitter, fault) is a pure function of (seed, index, salt), so any page can be computed
 * from its position without holding the data set in memory.
 */

/** lowbias32 (Chris Wellons' hash-prospector): a bijection on uint32 with good avalanche. */
export function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** Multiplicative inverse of an odd number modulo 2^32 (Newton's iteration doubles the correct bits each step). */
function inverseOdd(a: number): number {
  let inv = a;
  for (let i = 0; i < 5; i++) inv = Math.imul(inv, 2 - Math.imul(a, inv));
  return inv >>> 0;
}

const INV_A = inverseOdd(0x7feb352d);
const INV_B = inverseOdd(0x846ca68b);

/** The inverse of {@link mix32}: lets an event id be traced back to its index. */
export function unmix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, INV_B);
  x ^= (x >>> 15) ^ (x >>> 30);
  x = Math.imul(x, INV_A);
  x ^= x >>> 16;
  return x >>> 0;
}

/** A hash of three 32-bit inputs. Indices above 2^32 are not supported (the data set is capped far below). */
export function hash3(seed: number, a: number, salt: number): number {
  const base = mix32((seed ^ salt) >>> 0);
  return mix32(((base + a) >>> 0) ^ Math.imul(salt, 0x9e3779b9));
}

/** A uniform number in [0, 1) from a hash. */
export function unit(h: number): number {
  return h / 4294967296;
}

/** Salts: one per derived quantity, so the quantities are independent. */
export const SALT = {
  seed: 0x51ed270b,
  eventId0: 0x1b873593,
  eventId1: 0x2c1b3c6d,
  eventId2: 0x297a2d39,
  eventId3: 0x6b43a9b5,
  sessionId: 0x0d5a7f13,
  userId: 0x3c6ef372,
  sessionUser: 0x7a4b1c2d,
  sessionDevice: 0x5bd1e995,
  sessionBrowser: 0x68e31da4,
  sessionSize: 0x4cf5ad43,
  feistel: 0x2545f491,
  type: 0x61c88647,
  name: 0x7f4a7c15,
  jitter: 0x12345679,
  tie: 0x3b9aca07,
  fault: 0x5851f42d,
  faultDetail: 0x14057b7e,
  duplicate: 0x1d8e4e27,
  transient: 0x0bb67ae8,
  truncate: 0x3c6ef373,
  latency: 0x510e527f,
} as const;
