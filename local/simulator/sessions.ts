import { hash3, mix32, SALT } from './hash.ts';
import { uuid } from './uuid.ts';

/*
 * Sessions and users. key -> slot is a Feistel permutation inside blocks of 1024 keys, so a
 * session's events interleave with about twenty others over about twenty minutes, as sessions do
 * in the capture; slot -> session is a binary search in the prefix sums of the session sizes
 * (35 to 70 events each). Nothing here depends on timestamps, so the session invariants hold
 * whatever the timestamp distribution.
 */

const SESSION_MIN = 35;
const SESSION_MAX = 70;
const EVENTS_PER_SESSION = 50;
const EVENTS_PER_USER = 1000;
const BLOCK = 1024;
const BLOCK_HALF_BITS = 5;
const DEVICE_TYPES = ['mobile', 'tablet', 'desktop'] as const;
const BROWSERS = ['Chrome', 'Firefox', 'Safari', 'Edge'] as const;

export interface SessionInfo {
  id: string;
  userId: string;
  deviceType: string;
  browser: string;
}

export interface Sessions {
  readonly sessionCount: number;
  readonly userCount: number;
  sessionOfKey(key: number): number;
  sessionInfo(session: number): SessionInfo;
}

/** `seed` is the data set's mixed seed. */
export function createSessions(total: number, seed: number): Sessions {
  const sessionSeed = mix32((seed ^ SALT.sessionId) >>> 0);
  const userSeed = mix32((seed ^ SALT.userId) >>> 0);
  const sessionCount = Math.max(1, Math.round(total / EVENTS_PER_SESSION));
  const userCount = Math.max(1, Math.round(total / EVENTS_PER_USER));
  const prefix = sessionPrefixSums(total, seed, sessionCount);

  function permute(x: number, m: number, k: number): number {
    if (m <= 1) return x;
    let half = BLOCK_HALF_BITS;
    if (m !== BLOCK) {
      const bits = Math.max(2, Math.ceil(Math.log2(m)));
      half = Math.ceil(bits / 2);
    }
    const mask = (1 << half) - 1;
    do {
      let left = x >>> half;
      let right = x & mask;
      for (let r = 0; r < 4; r++) {
        const next = left ^ (hash3(k, right, SALT.feistel + r) & mask);
        left = right;
        right = next;
      }
      x = (left << half) | right;
    } while (x >= m);
    return x;
  }

  function sessionOfKey(key: number): number {
    const block = Math.floor(key / BLOCK);
    const start = block * BLOCK;
    const slot = start + permute(key - start, Math.min(BLOCK, total - start), (seed ^ block) >>> 0);
    let lo = 0;
    let hi = sessionCount - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (prefix[mid]! <= slot) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  // Pages touch about a hundred sessions; a small cache saves re-deriving their ids per event.
  const cache = new Map<number, SessionInfo>();
  function sessionInfo(s: number): SessionInfo {
    const hit = cache.get(s);
    if (hit) return hit;
    const user = hash3(seed, s, SALT.sessionUser) % userCount;
    const info: SessionInfo = {
      id: uuid(
        mix32((s ^ sessionSeed) >>> 0),
        hash3(sessionSeed, s, SALT.eventId1),
        hash3(sessionSeed, s, SALT.eventId2),
        hash3(sessionSeed, s, SALT.eventId3),
      ),
      userId: uuid(
        mix32((user ^ userSeed) >>> 0),
        hash3(userSeed, user, SALT.eventId1),
        hash3(userSeed, user, SALT.eventId2),
        hash3(userSeed, user, SALT.eventId3),
      ),
      deviceType: DEVICE_TYPES[hash3(seed, s, SALT.sessionDevice) % DEVICE_TYPES.length]!,
      browser: BROWSERS[hash3(seed, s, SALT.sessionBrowser) % BROWSERS.length]!,
    };
    if (cache.size >= 4096) cache.clear();
    cache.set(s, info);
    return info;
  }

  return { sessionCount, userCount, sessionOfKey, sessionInfo };
}

/** Session sizes, adjusted round-robin so they sum to exactly `total` while staying in 35..70, as prefix sums. */
function sessionPrefixSums(total: number, seed: number, sessionCount: number): Float64Array {
  const minSize = Math.min(SESSION_MIN, Math.floor(total / sessionCount));
  const maxSize = Math.max(SESSION_MAX, Math.ceil(total / sessionCount));
  const sizes = new Int32Array(sessionCount);
  let sum = 0;
  for (let s = 0; s < sessionCount; s++) {
    const size = minSize + (hash3(seed, s, SALT.sessionSize) % (maxSize - minSize + 1));
    sizes[s] = size;
    sum += size;
  }
  let diff = total - sum;
  while (diff !== 0) {
    for (let s = 0; s < sessionCount && diff !== 0; s++) {
      const size = sizes[s]!;
      if (diff < 0 && size > minSize) {
        sizes[s] = size - 1;
        diff++;
      } else if (diff > 0 && size < maxSize) {
        sizes[s] = size + 1;
        diff--;
      }
    }
  }
  const prefix = new Float64Array(sessionCount + 1);
  for (let s = 0; s < sessionCount; s++) prefix[s + 1] = prefix[s]! + sizes[s]!;
  return prefix;
}
