import { SluiceError } from '@sluice/errors';
import type { DomainEvent } from './cloud-events.js';
import type { ContractsErrorCode } from './errors.js';

/** Turns an event of type `from` into one of type `to` (e.g. `x.v1` → `x.v2`). */
export interface Upcaster {
  from: string;
  to: string;
  upcast(payload: unknown, event: DomainEvent): unknown;
}

/**
 * Builds a function that upcasts events through every registered step, so a consumer written
 * against the newest version also reads events written before it existed.
 *
 * @example
 * const upcast = createUpcaster([{ from: 'cart.opened.v1', to: 'cart.opened.v2',
 *   upcast: (p) => ({ ...(p as object), channel: 'web' }) }]);
 * upcast(v1Event).type // 'cart.opened.v2'
 */
export function createUpcaster(
  upcasters: readonly Upcaster[],
): (event: DomainEvent) => DomainEvent {
  const steps = new Map<string, Upcaster>();
  for (const step of upcasters) {
    if (steps.has(step.from)) {
      throw new SluiceError<ContractsErrorCode>(
        'upcaster_duplicate',
        `two upcasters start from ${step.from}`,
      );
    }
    steps.set(step.from, step);
  }
  return (event) => {
    let current = event;
    for (let hops = 0; ; hops += 1) {
      const step = steps.get(current.type);
      if (step === undefined) return current;
      if (hops >= steps.size) {
        throw new SluiceError<ContractsErrorCode>(
          'upcaster_cycle',
          `upcasters loop through ${current.type}`,
        );
      }
      current = { ...current, type: step.to, payload: step.upcast(current.payload, current) };
    }
  };
}
