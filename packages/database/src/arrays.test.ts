// arrayLiteral against pg's own serialization of an array parameter (`prepareValue`), which is
// what PostgreSQL received before: the same text for every element type it takes.
import fc from 'fast-check';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { arrayLiteral, type ArrayElement } from './arrays.js';

const { prepareValue } = createRequire(import.meta.url)('pg/lib/utils') as {
  prepareValue: (value: unknown) => unknown;
};

const tricky = fc.constantFrom(
  '"',
  '\\',
  '\\"',
  '"\\',
  'NULL',
  'null',
  '',
  ' ',
  '{',
  '}',
  ',',
  'a,b',
);
const element: fc.Arbitrary<ArrayElement> = fc.oneof(
  fc.string(),
  fc.string({ unit: 'binary' }),
  fc.uuid(),
  tricky,
  fc.integer(),
  fc.double(),
  fc.bigInt(),
  fc.boolean(),
  fc.constant(null),
  fc.constant(undefined),
);

describe('arrayLiteral', () => {
  it('writes generated arrays as pg does: mixed, plain, sparse, long', () => {
    const arrays = fc.oneof(
      fc.array(element),
      fc.array(fc.oneof(fc.uuid(), fc.integer())),
      fc.array(fc.uuid(), { minLength: 1000, maxLength: 1200 }),
      fc.sparseArray(element),
    );
    fc.assert(
      fc.property(arrays, (values) => {
        expect(arrayLiteral(values)).toBe(prepareValue(values));
      }),
      { numRuns: 1000 },
    );
  });

  it('writes the edges named one by one as pg does', () => {
    const cases: ArrayElement[][] = [
      [],
      [''],
      [null],
      [undefined],
      ['NULL'],
      ['"'],
      ['\\'],
      ['a"b\\c'],
      [-0, 0, NaN, Infinity, -Infinity, 1e21, 1.5],
      [2n ** 64n, -1n],
      [true, false],
      ['x', null, 'y'],
      Array.from({ length: 10 }, (_, i) => String(i)),
      Array.from({ length: 100 }, (_, i) => i),
    ];
    for (const values of cases) expect(arrayLiteral(values)).toBe(prepareValue(values));
  });
});
