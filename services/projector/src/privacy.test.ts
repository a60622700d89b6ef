import { isSluiceError } from '@sluice/errors';
import type { Projection } from '@sluice/projector';
import { describe, expect, it } from 'vitest';
import { revealerFor, revealing } from './privacy.js';

const catalog = {
  payloadErrors: () => [],
  events: {
    'member.joined.v1': {
      type: 'member.joined.v1',
      schema: {
        properties: {
          memberId: { type: 'string' },
          email: { type: 'string', 'x-sluice-protected': true, 'x-sluice-subject': 'memberId' },
        },
      },
    },
  },
};

const projection = (name: string, personalData?: 'reveal'): Projection => ({
  name,
  catalog,
  aggregateTypes: ['member'],
  tables: [`public.${name}`],
  createTables: () => Promise.resolve(),
  apply: () => Promise.resolve(),
  ...(personalData === undefined ? {} : { personalData }),
});

const KEY = 'ab'.repeat(32);

describe('revealing personal fields per projection', () => {
  it('picks the projections that opt in', () => {
    const members = projection('members', 'reveal');
    expect(revealing([projection('counts'), members])).toEqual([members]);
  });

  it('makes no hook, and needs no master key, when no projection opts in', () => {
    expect(revealerFor([projection('counts')], {})).toBeUndefined();
  });

  it('makes one with the master key when one opts in, and needs that key', () => {
    const hosted = [projection('counts'), projection('members', 'reveal')];
    expect(revealerFor(hosted, { SLUICE_MASTER_KEY: KEY })).toBeTypeOf('function');
    let thrown: unknown;
    try {
      revealerFor(hosted, {});
    } catch (error) {
      thrown = error;
    }
    expect(isSluiceError(thrown, 'config_invalid')).toBe(true);
  });
});
