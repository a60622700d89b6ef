import { SluiceError } from '@sluice/errors';
import { ERASED, isEnvelope, open, parseEnvelope, seal } from './envelope.js';
import type { PrivacyErrorCode } from './errors.js';
import type { MasterKeys } from './master-key.js';
import {
  ensureSubjectKey,
  eraseSubjectKey,
  readSubjectKeys,
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
}

/** Reveals in one transaction, reading each subject's key there once. */
export interface PrivacyReader {
  /**
   * The payload with its protected fields opened; once the subject was erased, every string in
   * them reads {@link ERASED}, in clear text or sealed.
   *
   * @throws SluiceError `subject_unknown` (a sealed field without its subject's key),
   *   `envelope_invalid`; `master_key_unknown` and `subject_key_invalid` (retriable: the master
   *   key configured is wrong, not the payload)
   */
  revealPayload<P>(type: string, payload: P): Promise<P>;
  /** A text of `subject` opened, or {@link ERASED}. @throws as {@link revealPayload} */
  revealText(subject: string, value: string): Promise<string>;
}

/** Seals and reveals personal fields; every call runs its SQL on the `db` it is given. */
export interface Privacy {
  /**
   * The events with their protected fields sealed, creating a subject's key in `db`'s transaction
   * on first use.
   *
   * @throws SluiceError `subject_erased`, `master_key_unknown`, `subject_key_invalid`
   */
  sealEvents<E extends { type: string; payload: unknown }>(
    db: Queryable,
    events: readonly E[],
  ): Promise<E[]>;
  /** {@link PrivacyReader.revealPayload} with the keys of `db`, read for this call alone. */
  revealPayload<P>(db: Queryable, type: string, payload: P): Promise<P>;
  /** `text` sealed with the subject's key (created on first use). */
  sealText(db: Queryable, subject: string, text: string): Promise<string>;
  /** {@link PrivacyReader.revealText} with the keys of `db`, read for this call alone. */
  revealText(db: Queryable, subject: string, value: string): Promise<string>;
  /**
   * A reader of `db`'s transaction that reads each subject's key once: make one per transaction
   * and drop it when the transaction ends, since it does not see an erasure committed later.
   *
   * @example const reader = privacy.reader(trx); for (const e of events) await reader.revealPayload(e.type, e.payload);
   */
  reader(db: Queryable): PrivacyReader;
  /** Destroys the subject's key in `db`'s transaction. */
  erase(db: Queryable, subject: string): Promise<void>;
}

type Fields = Record<string, unknown>;

/** The payload with `change` applied to each string in its protected fields. */
async function transform<P>(
  fields: ProtectedFields,
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

/** A {@link PrivacyReader} over `db`, remembering each subject's key while it lives. */
/** A subject's key being read. */
interface Waiting {
  resolve: (key: Buffer | null | undefined) => void;
  reject: (error: unknown) => void;
}

function createReader(db: Queryable, keys: MasterKeys, fields: ProtectedFields): PrivacyReader {
  const read = new Map<string, Promise<Buffer | null | undefined>>();
  // Subjects asked for before the next turn of the event loop are read in one statement: a
  // batch's events revealed side by side cost one round trip, not one per subject.
  let wanted: Map<string, Waiting> | undefined;
  const flush = (batch: NonNullable<typeof wanted>) => {
    wanted = undefined;
    readSubjectKeys(db, keys, [...batch.keys()]).then(
      (found) => {
        for (const [subject, { resolve, reject }] of batch) {
          try {
            resolve(found.get(subject)?.());
          } catch (error) {
            reject(error);
          }
        }
      },
      (error: unknown) => {
        for (const { reject } of batch.values()) reject(error);
      },
    );
  };
  const keyOf = (subject: string) => {
    let key = read.get(subject);
    if (key === undefined) {
      const batch = wanted ?? new Map<string, Waiting>();
      if (wanted === undefined) setImmediate(() => flush(batch));
      wanted = batch;
      key = new Promise((resolve, reject) => batch.set(subject, { resolve, reject }));
      read.set(subject, key);
    }
    return key;
  };

  async function revealText(subject: string, value: string): Promise<string> {
    const key = await keyOf(subject);
    if (key === null) return ERASED;
    if (!isEnvelope(value)) return value;
    const envelope = parseEnvelope(value);
    if (envelope.subject !== subject)
      throw new SluiceError<PrivacyErrorCode>(
        'envelope_invalid',
        `A field of subject ${subject} is sealed for ${envelope.subject}`,
      );
    if (key === undefined)
      throw new SluiceError<PrivacyErrorCode>('subject_unknown', `No key for subject ${subject}`);
    return open(key, envelope);
  }

  return {
    revealText,
    revealPayload: (type, payload) => transform(fields, payload, type, revealText),
  };
}

/**
 * Crypto-shredding over `sluice.subject_keys`. Nothing is cached between calls, except by a
 * {@link Privacy.reader} for its transaction.
 *
 * @example
 * const privacy = createPrivacy({ keys: loadMasterKeys(), fields: shopProtectedFields });
 * const [sealed] = await privacy.sealEvents(client, [{ type, payload }]);
 */
export function createPrivacy(options: PrivacyOptions): Privacy {
  const { keys, fields } = options;

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
      const payload = await transform(fields, event.payload, event.type, async (subject, value) =>
        seal(await keyOf(subject), subject, value),
      );
      sealedEvents.push({ ...event, payload });
    }
    return sealedEvents;
  }

  const reader = (db: Queryable) => createReader(db, keys, fields);
  return {
    sealEvents,
    revealPayload: (db, type, payload) => reader(db).revealPayload(type, payload),
    sealText,
    revealText: (db, subject, value) => reader(db).revealText(subject, value),
    reader,
    erase: (db, subject) => eraseSubjectKey(db, subject),
  };
}
