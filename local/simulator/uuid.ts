import { mix32 } from './hash.ts';

/**
 * A v4-shaped UUID from four 32-bit words. The first word is printed as is, so a caller that makes
 * it a bijection of a key can read the key back from the first eight hex digits.
 */
export function uuid(w0: number, w1: number, w2: number, w3: number): string {
  // Table lookups: Number#toString(16) plus padding was the hottest line of page generation.
  const w4 = mix32((w2 ^ w3) >>> 0);
  return (
    HEX[w0 >>> 24]! +
    HEX[(w0 >>> 16) & 255]! +
    HEX[(w0 >>> 8) & 255]! +
    HEX[w0 & 255]! +
    '-' +
    HEX[w1 >>> 24]! +
    HEX[(w1 >>> 16) & 255]! +
    '-4' +
    HEX_LOW[(w1 >>> 8) & 15]! +
    HEX[w1 & 255]! +
    '-' +
    VARIANT[w2 >>> 30]! +
    HEX_LOW[(w2 >>> 16) & 15]! +
    HEX[(w2 >>> 8) & 255]! +
    '-' +
    HEX[w4 >>> 24]! +
    HEX[(w4 >>> 16) & 255]! +
    HEX[w3 >>> 24]! +
    HEX[(w3 >>> 16) & 255]! +
    HEX[(w3 >>> 8) & 255]! +
    HEX[w3 & 255]!
  );
}

const HEX: readonly string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
const HEX_LOW: readonly string[] = Array.from({ length: 16 }, (_, i) => i.toString(16));
const VARIANT: readonly string[] = ['8', '9', 'a', 'b'];
