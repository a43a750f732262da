import { describe, expect, it } from 'vitest';
import { UpstreamProtocolError } from '#shared/errors.ts';
import { ZERO_ID } from '#shared/step/chains.ts';
import { checkStreamPosition, MAX_EMPTY_PAGES_IN_A_ROW } from '#shared/step/position.ts';
import { row } from '#test/support/chains.ts';

const TS = Date.UTC(2026, 0, 20, 12, 0, 0);
const ID = '7a000000-0000-4000-8000-000000000007';
const at = (positionTs: number | null, positionId: string | null, emptyPagesInARow = 0) =>
  row({ positionTs, positionId, emptyPagesInARow });
const page = (rows: number, hasMore = true) => ({ data: new Array(rows).fill({}), hasMore });

function stop(f: () => unknown): UpstreamProtocolError {
  try {
    f();
  } catch (error) {
    expect(error).toBeInstanceOf(UpstreamProtocolError);
    return error as UpstreamProtocolError;
  }
  throw new Error('expected an UpstreamProtocolError');
}

describe('checkStreamPosition: the stream moves strictly down', () => {
  it('lets a cursor below the request position through, and one at the same instant with a lower id', () => {
    expect(
      checkStreamPosition(
        at(TS, ID),
        page(5000),
        { ts: TS - 1, id: 'f0000000-0000-4000-8000-000000000000' },
        's',
      ),
    ).toEqual({
      emptyPage: false,
    });
    expect(
      checkStreamPosition(at(TS, ID), page(2), { ts: TS, id: '6a000000-0000-4000-8000-000000000000' }, 's'),
    ).toEqual({
      emptyPage: false,
    });
    // Page one has no position; a chain's start (the zero id) is above every id at its instant.
    expect(checkStreamPosition(at(null, null), page(1), { ts: TS, id: ID }, 's').emptyPage).toBe(false);
    expect(checkStreamPosition(at(TS, ZERO_ID), page(1), { ts: TS, id: ID }, 's').emptyPage).toBe(false);
    // The last page ends the stream wherever its position is.
    expect(checkStreamPosition(at(TS, ID), page(1, false), { ts: TS + 1000, id: ID }, 's').emptyPage).toBe(
      false,
    );
  });

  it('stops a cursor that points back, naming both positions', () => {
    const e = stop(() => checkStreamPosition(at(TS, ID), page(5000), { ts: TS + 60_000, id: ID }, 'src'));
    expect(e.message).toContain('Source "src": the upstream\'s nextCursor points back');
    expect(e.message).toContain(`Request position (ts=${TS} ${new Date(TS).toISOString()}, id=${ID})`);
    expect(e.message).toContain(`the page's cursor (ts=${TS + 60_000}`);
    expect(e.message).toContain('start the execution again to resume from it');
  });

  it('stops a cursor that points sideways: the same instant, an id not below', () => {
    const e = stop(() =>
      checkStreamPosition(at(TS, ID), page(10), { ts: TS, id: 'ffffffff-ffff-4fff-bfff-ffffffffffff' }, 's'),
    );
    expect(e.message).toContain('points sideways');
  });

  it(`counts empty pages with hasMore from the checkpoint and stops at the ${MAX_EMPTY_PAGES_IN_A_ROW}th in a row`, () => {
    const down = { ts: TS - 1, id: ID };
    expect(checkStreamPosition(at(TS, ID, 0), page(0), down, 's')).toEqual({ emptyPage: true });
    expect(checkStreamPosition(at(TS, ID, MAX_EMPTY_PAGES_IN_A_ROW - 2), page(0), down, 's')).toEqual({
      emptyPage: true,
    });
    const e = stop(() => checkStreamPosition(at(TS, ID, MAX_EMPTY_PAGES_IN_A_ROW - 1), page(0), down, 's'));
    expect(e.message).toContain(`came with empty page number ${MAX_EMPTY_PAGES_IN_A_ROW} in a row`);
    // A page with a row is no empty page, whatever the count.
    expect(checkStreamPosition(at(TS, ID, MAX_EMPTY_PAGES_IN_A_ROW - 1), page(1), down, 's').emptyPage).toBe(
      false,
    );
  });

  it('escapes an id the upstream put in its cursor', () => {
    const e = stop(() => checkStreamPosition(at(TS, ID), page(1), { ts: TS + 1, id: 'x\u001b[31m\n' }, 's'));
    expect(e.message).toContain('id=x\\u001b[31m\\u000a');
    expect(e.message).not.toContain('\u001b');
  });
});
