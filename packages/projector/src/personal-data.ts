import type { DomainEvent } from '@sluice/contracts';
import type { Projection } from './projection.js';
import type { Reveal } from './records.js';

/** What replaces a personal value in an error text. */
export const REDACTED = '[redacted]';

/** Causes followed at most when redacting an error. */
const MAX_CAUSES = 8;

/** The non-empty strings of `after` that `before` does not hold at the same place. */
function openedStrings(before: unknown, after: unknown, into: string[]): void {
  if (typeof after === 'string') {
    if (after !== before && after !== '') into.push(after);
    return;
  }
  if (typeof after !== 'object' || after === null) return;
  const earlier = typeof before === 'object' && before !== null ? before : {};
  for (const [key, value] of Object.entries(after))
    openedStrings((earlier as Record<string, unknown>)[key], value, into);
}

const escapeRegExp = (text: string): string => text.replace(/[\\^$.*+?()[\]{}|/]/g, '\\$&');

/**
 * Replaces `values` in a text with {@link REDACTED}: as they are, JSON-escaped and with single
 * quotes doubled (as SQL and JSON texts quote them), in any letter case.
 */
export function redactor(values: Iterable<string>): (text: string) => string {
  const forms = new Set<string>();
  for (const value of values) {
    if (value === '') continue;
    forms.add(value);
    forms.add(JSON.stringify(value).slice(1, -1));
    forms.add(value.replaceAll("'", "''"));
  }
  if (forms.size === 0) return (text) => text;
  const alternatives = [...forms].sort((a, b) => b.length - a.length).map(escapeRegExp);
  const pattern = new RegExp(alternatives.join('|'), 'giu');
  return (text) => text.replace(pattern, REDACTED);
}

/**
 * A copy of `error` whose texts (message, stack, a database error's `detail`, ... and those of
 * its causes) went through `redact`; same prototype and other properties, so `instanceof`, codes
 * and constraint names still tell what failed.
 */
export function redactedError(
  error: unknown,
  redact: (text: string) => string,
  depth = 0,
): unknown {
  if (typeof error === 'string') return redact(error);
  if (typeof error !== 'object' || error === null || depth > MAX_CAUSES) return error;
  const copy = Object.create(Object.getPrototypeOf(error) as object | null) as object;
  for (const key of Reflect.ownKeys(error)) {
    const descriptor = Object.getOwnPropertyDescriptor(error, key);
    const value: unknown = (error as Record<PropertyKey, unknown>)[key];
    Object.defineProperty(copy, key, {
      value: key === 'cause' ? redactedError(value, redact, depth + 1) : redactText(value, redact),
      writable: true,
      configurable: true,
      enumerable: descriptor?.enumerable ?? false,
    });
  }
  return copy;
}

const redactText = (value: unknown, redact: (text: string) => string): unknown =>
  typeof value === 'string' ? redact(value) : value;

/**
 * The personal data of one batch: the reveal hook as a projection may have it, and the clear
 * values it opened, to keep them out of every error text the batch leaves behind (parked rows,
 * dead letters, errors thrown to the consumer and its logs).
 */
export class OpenedValues {
  private readonly byEvent = new Map<DomainEvent, readonly string[]>();

  /**
   * `reveal` for `projection`: none unless it opted in (`personalData: 'reveal'`). The hook
   * returned remembers what it opened in each event (the strings it changed).
   */
  revealFor(projection: Pick<Projection, 'personalData'>, reveal: Reveal | undefined) {
    if (reveal === undefined || projection.personalData !== 'reveal') return undefined;
    const hook: Reveal = async (event, sql) => {
      const opened = await reveal(event, sql);
      const values: string[] = [];
      openedStrings(event, opened, values);
      if (values.length > 0) this.byEvent.set(opened, values);
      return opened;
    };
    return hook;
  }

  /** Redacts what was opened in `event`. */
  redactorOf(event: DomainEvent): (text: string) => string {
    return redactor(this.byEvent.get(event) ?? []);
  }

  /** `error` without anything opened in the batch (itself when nothing was). */
  redactError(error: unknown): unknown {
    if (this.byEvent.size === 0) return error;
    return redactedError(error, redactor([...this.byEvent.values()].flat()));
  }
}
