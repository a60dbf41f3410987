import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { FirnError } from '../errors.ts';
import { parseRange } from './range.ts';

function unsatisfiable(size: number) {
  return (error: unknown): boolean =>
    FirnError.is(error) &&
    error.code === 'FIRN_E_RANGE_INVALID' &&
    error.httpStatus === 416 &&
    error.details?.size === size;
}

describe('parseRange', () => {
  test('no header means the whole body', () => {
    assert.equal(parseRange(undefined, 100), undefined);
  });

  test('single ranges as Nix sends them when resuming, and the other single forms', () => {
    const cases: [string, { start: number; end: number }][] = [
      ['bytes=0-', { start: 0, end: 99 }],
      ['bytes=40-', { start: 40, end: 99 }],
      ['bytes=99-', { start: 99, end: 99 }],
      ['bytes=0-0', { start: 0, end: 0 }],
      ['bytes=10-19', { start: 10, end: 19 }],
      ['bytes=10-1000', { start: 10, end: 99 }],
      ['bytes=-1', { start: 99, end: 99 }],
      ['bytes=-30', { start: 70, end: 99 }],
      ['bytes=-500', { start: 0, end: 99 }],
      [' bytes=5-6 ', { start: 5, end: 6 }],
      ['Bytes=5-6', { start: 5, end: 6 }],
    ];
    for (const [header, range] of cases) assert.deepEqual(parseRange(header, 100), range, header);
  });

  test('ranges that cannot be satisfied are 416 with the size for Content-Range', () => {
    for (const header of [
      'bytes=100-',
      'bytes=100-200',
      'bytes=5-4',
      'bytes=-0',
      'bytes=-',
      'bytes=abc',
      'bytes=1-2-3',
      'bytes=99999999999999999999-',
    ]) {
      assert.throws(() => parseRange(header, 100), unsatisfiable(100), header);
    }
    assert.throws(() => parseRange('bytes=0-', 0), unsatisfiable(0));
    assert.throws(() => parseRange('bytes=-5', 0), unsatisfiable(0));
  });

  test('multi-range requests are ignored (the whole body is served), as RFC 9110 allows', () => {
    assert.equal(parseRange('bytes=0-1,5-6', 100), undefined);
    assert.equal(parseRange('bytes=0-1, 500-', 100), undefined);
    assert.equal(parseRange(' bytes=0-1,2-3', 100), undefined);
  });

  test('a range unit other than bytes is ignored, as RFC 9110 requires', () => {
    assert.equal(parseRange('items=0-5', 100), undefined);
    assert.equal(parseRange('none', 100), undefined);
  });
});
