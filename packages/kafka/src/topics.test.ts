import { describe, expect, it } from 'vitest';
import { durabilityProblems, replicationFor } from './topics.js';

describe('replicationFor', () => {
  it.each([
    [1, {}, { replicationFactor: 1, minInsyncReplicas: 1 }],
    [2, {}, { replicationFactor: 2, minInsyncReplicas: 1 }],
    [3, {}, { replicationFactor: 3, minInsyncReplicas: 2 }],
    [
      9,
      { replicationFactor: 'auto', minInsyncReplicas: 'auto' },
      { replicationFactor: 3, minInsyncReplicas: 2 },
    ],
    [9, { replicationFactor: 5 }, { replicationFactor: 5, minInsyncReplicas: 2 }],
    [3, { minInsyncReplicas: 3 }, { replicationFactor: 3, minInsyncReplicas: 3 }],
  ] as const)('%i brokers, %j → %j', (brokers, options, expected) => {
    expect(replicationFor(brokers, options)).toEqual(expected);
  });
});

describe('durabilityProblems', () => {
  const safe = {
    brokers: 3,
    replicationFactor: 3,
    minInsyncReplicas: 2,
    uncleanLeaderElection: false,
  };

  it('none for 3 replicas, 2 in sync, clean elections; none on a single broker', () => {
    expect(durabilityProblems(safe)).toEqual([]);
    expect(
      durabilityProblems({ ...safe, brokers: 1, replicationFactor: 1, minInsyncReplicas: 1 }),
    ).toEqual([]);
  });

  it.each([
    [
      { replicationFactor: 1, minInsyncReplicas: 1 },
      'replication factor 1 on a cluster of 3 brokers',
    ],
    [{ minInsyncReplicas: 1 }, 'min.insync.replicas 1: a record acknowledged by its leader alone'],
    [
      { minInsyncReplicas: 3 },
      'min.insync.replicas 3 of 3 replicas: one broker down stops every write',
    ],
    [{ minInsyncReplicas: 4 }, 'min.insync.replicas 4 above its 3 replicas'],
    [{ uncleanLeaderElection: true }, 'unclean.leader.election.enable=true'],
  ])('%j: %s', (change, problem) => {
    const found = durabilityProblems({ ...safe, ...change });
    expect(found).toHaveLength(1);
    expect(found[0]).toContain(problem);
  });
});
