// Test support: a small seeded pseudo-random generator (mulberry32), so a generated workload is
// a pure function of its seed and any failing run can be replayed exactly.
import { randomInt } from 'node:crypto';

export interface Random {
  /** A float in [0, 1). */
  next(): number;
  /** An integer in [min, max], uniformly. */
  int(min: number, max: number): number;
  /** An integer in [min, max] (min ≥ 1), uniform in its logarithm: small values as often as large ones. */
  logInt(min: number, max: number): number;
  chance(probability: number): boolean;
  pick<T>(items: readonly T[]): T;
  /** A random-looking RFC 4122 version 4 UUID. */
  uuid(): string;
  /** `length` characters drawn from `alphabet` (code points, so surrogate pairs stay whole). */
  text(length: number, alphabet: readonly string[]): string;
}

/** A generator whose whole sequence is determined by `seed` (any 32-bit integer). */
export function createRandom(seed: number): Random {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
  const int = (min: number, max: number) => min + Math.floor(next() * (max - min + 1));
  const hex = (digits: number) =>
    Array.from({ length: digits }, () => int(0, 15).toString(16)).join('');
  return {
    next,
    int,
    logInt: (min, max) =>
      Math.min(max, Math.floor(Math.exp(Math.log(min) + next() * Math.log((max + 1) / min)))),
    chance: (probability) => next() < probability,
    pick<T>(items: readonly T[]): T {
      const item = items[int(0, items.length - 1)];
      if (item === undefined) throw new Error('pick from an empty list');
      return item;
    },
    uuid: () => `${hex(8)}-${hex(4)}-4${hex(3)}-${'89ab'.charAt(int(0, 3))}${hex(3)}-${hex(12)}`,
    text(length, alphabet) {
      const parts = new Array<string>(length);
      for (let i = 0; i < length; i += 1) parts[i] = alphabet[int(0, alphabet.length - 1)] ?? '';
      return parts.join('');
    },
  };
}

/** A fresh seed for a run nobody asked to replay. */
export function freshSeed(): number {
  return randomInt(1, 2 ** 31 - 1);
}
