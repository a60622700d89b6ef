import { SluiceError } from '@sluice/errors';
import { ERASED, isEnvelope, open, parseEnvelope, seal } from './envelope.js';
import type { PrivacyErrorCode } from './errors.js';
import type { MasterKeys } from './master-key.js';
import {
  ensureSubjectKey,
  eraseSubjectKey,
  readSubjectKey,
  type Queryable,
} from './subject-keys.js';

/** The personal fields of one event type and the payload field naming whose data they are. */
export interface ProtectedEvent {
  subject: string;
  fields: readonly string[];
}

/** Protected fields by event type; types not listed carry no personal data. */
export type ProtectedFields = Readonly<Record<string, ProtectedEvent | undefined>>;

/** Options for {@link createPrivacy}. */
export interface PrivacyOptions {
  keys: MasterKeys;
  fields: ProtectedFields;
  /** How long an unwrapped subject key is reused for reading. Default 5000. */
  cacheMs?: number;
}

/** Seals and reveals personal fields; every call runs its SQL on the `db` it is given. */
export interface Privacy {
  /**
   * The events with their protected fields sealed, creating a subject's key in `db`'s transaction
   * on first use.
   *
   * @throws SluiceError `subject_erased`, `master_key_unknown`
   */
  sealEvents<E extends { type: string; payload: unknown }>(
    db: Queryable,
    events: readonly E[],
  ): Promise<E[]>;
  /**
   * The payload with its sealed fields opened, or {@link ERASED} once the subject was erased;
   * fields in clear text stay as they are.
   *
   * @throws SluiceError `subject_unknown`, `envelope_invalid`, `master_key_unknown`
   */
  revealPayload<P>(db: Queryable, type: string, payload: P): Promise<P>;
  /** `text` sealed with the subject's key (created on first use). */
  sealText(db: Queryable, subject: string, text: string): Promise<string>;
  /** A sealed text opened, or {@link ERASED}. @throws as {@link revealPayload} */
  revealText(db: Queryable, subject: string, value: string): Promise<string>;
  /** Destroys the subject's key in `db`'s transaction. */
  erase(db: Queryable, subject: string): Promise<void>;
}

type Fields = Record<string, unknown>;

/**
 * Crypto-shredding over `sluice.subject_keys`.
 *
 * @example
 * const privacy = createPrivacy({ keys: loadMasterKeys(), fields: shopProtectedFields });
 * const [sealed] = await privacy.sealEvents(client, [{ type, payload }]);
 */
export function createPrivacy(options: PrivacyOptions): Privacy {
  const { keys, fields } = options;
  const cacheMs = options.cacheMs ?? 5000;
  const cache = new Map<string, { key: Buffer | null; until: number }>();

  async function readingKey(db: Queryable, subject: string): Promise<Buffer | null> {
    const cached = cache.get(subject);
    if (cached !== undefined && (cached.key === null || cached.until > Date.now()))
      return cached.key;
    const key = await readSubjectKey(db, keys, subject);
    if (key === undefined)
      throw new SluiceError<PrivacyErrorCode>('subject_unknown', `No key for subject ${subject}`);
    cache.set(subject, { key, until: Date.now() + cacheMs });
    return key;
  }

  async function revealText(db: Queryable, subject: string, value: string): Promise<string> {
    if (!isEnvelope(value)) return value;
    const envelope = parseEnvelope(value);
    if (envelope.subject !== subject)
      throw new SluiceError<PrivacyErrorCode>(
        'envelope_invalid',
        `A field of subject ${subject} is sealed for ${envelope.subject}`,
      );
    const key = await readingKey(db, subject);
    return key === null ? ERASED : open(key, envelope);
  }

  async function transform<P>(
    payload: P,
    type: string,
    change: (subject: string, value: string) => Promise<string>,
  ): Promise<P> {
    const spec = fields[type];
    if (spec === undefined || typeof payload !== 'object' || payload === null) return payload;
    const subject = (payload as Fields)[spec.subject];
    if (typeof subject !== 'string') return payload;
    const changed: Fields = { ...(payload as Fields) };
    for (const field of spec.fields) {
      const value = changed[field];
      if (typeof value === 'string') changed[field] = await change(subject, value);
    }
    return changed as P;
  }

  const sealText = async (db: Queryable, subject: string, text: string) =>
    seal(await ensureSubjectKey(db, keys, subject), subject, text);

  async function sealEvents<E extends { type: string; payload: unknown }>(
    db: Queryable,
    events: readonly E[],
  ): Promise<E[]> {
    const subjectKeys = new Map<string, Promise<Buffer>>();
    const keyOf = (subject: string) => {
      let key = subjectKeys.get(subject);
      if (key === undefined) subjectKeys.set(subject, (key = ensureSubjectKey(db, keys, subject)));
      return key;
    };
    const sealedEvents: E[] = [];
    for (const event of events) {
      // Always sealed, even text that looks sealed: input could imitate an envelope.
      const payload = await transform(event.payload, event.type, async (subject, value) =>
        seal(await keyOf(subject), subject, value),
      );
      sealedEvents.push({ ...event, payload });
    }
    return sealedEvents;
  }

  return {
    sealEvents,
    revealPayload: (db, type, payload) =>
      transform(payload, type, (subject, value) => revealText(db, subject, value)),
    sealText,
    revealText,
    erase: async (db, subject) => {
      await eraseSubjectKey(db, subject);
      cache.set(subject, { key: null, until: Infinity });
    },
  };
}
