import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { chainKey, parseChainKey, ZERO_ID } from '#shared/step/chains.ts';
import { sourceIdSchema } from '#shared/step/contract.ts';

describe('chainKey', () => {
  it("is the source id for chain 0 and '<sourceId>~<j>' for the others", () => {
    expect(chainKey('default', 0)).toBe('default');
    expect(chainKey('default', 1)).toBe('default~1');
    expect(chainKey('shop.eu-1', 12)).toBe('shop.eu-1~12');
  });

  it('refuses a chain that is not an integer >= 0', () => {
    for (const bad of [-1, 1.5, Number.NaN]) expect(() => chainKey('default', bad)).toThrow(RangeError);
  });

  it('never names a valid source id, and parseChainKey reverses it', () => {
    const sourceIds = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/);
    fc.assert(
      fc.property(sourceIds, fc.nat(10_000), (sourceId, chain) => {
        const key = chainKey(sourceId, chain);
        expect(sourceIdSchema.safeParse(key).success).toBe(chain === 0);
        expect(parseChainKey(key)).toEqual({ sourceId, chain });
      }),
    );
  });
});

describe('parseChainKey', () => {
  it('returns null for what chainKey never makes', () => {
    for (const bad of ['', 'a~0', 'a~01', 'a~x', 'a~-1', '~1', 'a~', 'a~1~2'])
      expect(parseChainKey(bad)).toBeNull();
  });
});

it('ZERO_ID is the nil UUID', () => {
  expect(ZERO_ID).toBe('00000000-0000-0000-0000-000000000000');
});
