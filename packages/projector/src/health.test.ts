import { SluiceError } from '@sluice/errors';
import { describe, expect, it } from 'vitest';
import type { Consumed } from './generation-sync.js';
import { consumerProblems } from './health.js';

function consumed(health: {
  failingSince?: number;
  lastError?: unknown;
  crashed?: unknown;
  applyingSince?: number;
  fetchOverdueSince?: number;
}) {
  const consumer = {
    health: () => ({
      failingSince: undefined,
      lastError: undefined,
      crashed: undefined,
      applyingSince: undefined,
      fetchOverdueSince: undefined,
      ...health,
    }),
  };
  return [{ projection: 'orders', generation: 2, consumer } as unknown as Consumed];
}

const secretMessage = 'password authentication failed for "svc" at db.internal: s3cr3t';

describe('consumerProblems', () => {
  it('names a stopped consumer by its error code, never its message', () => {
    const crashed = Object.assign(new Error(secretMessage), { code: '28P01' });
    const [problem] = consumerProblems(consumed({ crashed }), 1000);
    expect(problem).toMatchObject({ code: 'consumer_stopped', projection: 'orders' });
    expect(problem?.detail).toContain('(28P01)');
    expect(problem?.detail).not.toContain('s3cr3t');
  });

  it('names failing batches by a Sluice code, a Kafka type or the error name', () => {
    const failingSince = Date.now() - 5000;
    const kinds = [
      [new SluiceError('view_write_failed', secretMessage), 'view_write_failed'],
      [Object.assign(new Error(secretMessage), { type: 'REQUEST_TIMED_OUT' }), 'REQUEST_TIMED_OUT'],
      [new TypeError(secretMessage), 'TypeError'],
      [secretMessage, 'unknown'],
    ] as const;
    for (const [lastError, kind] of kinds) {
      const [problem] = consumerProblems(consumed({ failingSince, lastError }), 1000);
      expect(problem).toMatchObject({ code: 'stalled' });
      expect(problem?.detail).toContain(`(${kind})`);
      expect(problem?.detail).not.toContain('s3cr3t');
    }
  });

  it('says nothing of batches failing for less than the stall time', () => {
    const failingSince = Date.now();
    expect(consumerProblems(consumed({ failingSince, lastError: new Error('x') }), 60_000)).toEqual(
      [],
    );
  });

  it('names a batch applying for the stall time or longer, and not one applying for less', () => {
    const [problem] = consumerProblems(consumed({ applyingSince: Date.now() - 5000 }), 1000);
    expect(problem).toMatchObject({ code: 'stalled', projection: 'orders' });
    expect(problem?.detail).toMatch(/^A batch of orders generation 2 has been applying for 5 s/);
    expect(consumerProblems(consumed({ applyingSince: Date.now() }), 60_000)).toEqual([]);
  });

  it('names a fetch Kafka has not answered for the stall time, and not one waiting for less', () => {
    const [problem] = consumerProblems(consumed({ fetchOverdueSince: Date.now() - 7000 }), 1000);
    expect(problem).toMatchObject({ code: 'stalled', projection: 'orders' });
    expect(problem?.detail).toBe(
      'Kafka has not answered the fetches of orders generation 2 for 7 s',
    );
    expect(consumerProblems(consumed({ fetchOverdueSince: Date.now() - 900 }), 1000)).toEqual([]);
  });
});
