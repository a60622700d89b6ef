import { SluiceError } from '@sluice/errors';
import { Type, type Static, type TObject } from '@sinclair/typebox';
import { Ajv, type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';
import type { DomainEvent } from './cloud-events.js';
import type { ContractsErrorCode } from './errors.js';

/** One event type of a catalog: its name, its aggregate, its version and its payload's schema. */
export interface EventDefinition<
  T extends string = string,
  A extends string = string,
  S extends TObject = TObject,
> {
  /** `<aggregate>.<fact>.v<n>`, e.g. `invoice.issued.v1`. */
  type: T;
  /** Routes the event to topic `outbox.event.<aggregateType>`. */
  aggregateType: A;
  version: number;
  description: string;
  /** The payload's JSON Schema (TypeBox), closed to unknown properties. */
  schema: S;
}

const TYPE = /^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+\.v([1-9][0-9]*)$/;
const AGGREGATE_TYPE = /^[a-z][a-z0-9_]*$/;

/**
 * Defines an event type. Types name domain facts (`invoice.issued.v1`), never table diffs; a
 * breaking change adds `.v2` next to `.v1` and an upcaster between them.
 *
 * @example
 * const issued = defineEvent('invoice.issued.v1', 'invoice', 'An invoice was issued.',
 *   Type.Object({ invoiceId: Type.String({ format: 'uuid' }), totalCents: Type.Integer() }));
 */
export function defineEvent<const T extends string, const A extends string, S extends TObject>(
  type: T,
  aggregateType: A,
  description: string,
  payload: S,
): EventDefinition<T, A, S> {
  const version = TYPE.exec(type)?.[2];
  if (version === undefined || !AGGREGATE_TYPE.test(aggregateType)) {
    throw new SluiceError<ContractsErrorCode>(
      'event_definition_invalid',
      `Event type ${JSON.stringify(type)} must read <aggregate>.<fact>.v<n> in snake_case, ` +
        `and its aggregate type ${JSON.stringify(aggregateType)} snake_case`,
    );
  }
  const schema = Type.Object(payload.properties, {
    title: type,
    description,
    additionalProperties: false,
  }) as unknown as S;
  return { type, aggregateType, version: Number(version), description, schema };
}

/** A catalog's definitions, keyed by event type. */
export type EventDefinitions = Record<string, EventDefinition>;

/** The payload of event type `T` of a catalog's definitions `D`. */
export type PayloadOf<D extends EventDefinitions, T extends keyof D> = Static<D[T]['schema']>;

/** Options for {@link defineCatalog}. */
export interface CatalogOptions {
  /** Where the published JSON Schemas live: each one's `$id` is `<base><type>.json`. */
  schemaIdBase?: string;
}

/** A team's event catalog: its types, and the validation its writers and readers share. */
export interface Catalog<D extends EventDefinitions = EventDefinitions> {
  readonly events: D;
  /** The aggregate types of the catalog, each once: each has its own topic. */
  readonly aggregateTypes: readonly D[keyof D]['aggregateType'][];
  /** Whether `type` names an event of the catalog. */
  isEventType(type: string): type is keyof D & string;
  /** Why a payload does not match its type's schema: one line per violation, empty when valid. */
  readonly payloadErrors: (type: string, payload: unknown) => string[];
  /** The JSON Schema files to publish for consumers in any language: file name → text. */
  schemaFiles(): Record<string, string>;
}

/** What the types below read of a catalog: its definitions. */
type Defined = { readonly events: EventDefinitions };

/** An event of catalog `C`, discriminated by `type`: switching on it narrows the payload. */
export type EventOf<C extends Defined> = {
  [T in keyof C['events'] & string]: DomainEvent<PayloadOf<C['events'], T>> & {
    type: T;
    aggregateType: C['events'][T]['aggregateType'];
  };
}[keyof C['events'] & string];

/** An event of catalog `C` to append: its type and payload. */
export type NewEventOf<C extends Defined> = {
  [T in keyof C['events'] & string]: { type: T; payload: PayloadOf<C['events'], T> };
}[keyof C['events'] & string];

/**
 * Defines a team's event catalog: the one place its event types, versions and payload schemas
 * live. The outbox refuses events it does not accept, projectors dead-letter them, and its
 * `schemaFiles()` are what consumers in other languages validate against.
 *
 * @example
 * export const catalog = defineCatalog({ 'invoice.issued.v1': issued }, { schemaIdBase: 'https://example.com/schemas/' });
 * export type InvoiceEvent = EventOf<typeof catalog>;
 */
export function defineCatalog<const D extends EventDefinitions>(
  events: D,
  options: CatalogOptions = {},
): Catalog<D> {
  for (const [key, definition] of Object.entries(events)) {
    if (key !== definition.type) {
      throw new SluiceError<ContractsErrorCode>(
        'event_definition_invalid',
        `Catalog key ${JSON.stringify(key)} names event type ${JSON.stringify(definition.type)}`,
      );
    }
  }
  const schemaOf = (type: string) => {
    const { schema } = events[type] as EventDefinition;
    return options.schemaIdBase === undefined
      ? schema
      : { $id: `${options.schemaIdBase}${type}.json`, ...schema };
  };
  // One validator per catalog: two catalogs may reuse a type name with other schemas.
  const ajv = new Ajv({ allErrors: true, strict: true });
  addFormats.default(ajv);
  // Annotations of personal fields (`@sluice/privacy`): documentation, not validation.
  ajv.addVocabulary(['x-sluice-protected', 'x-sluice-subject']);
  const validators = new Map<string, ValidateFunction>();
  const isEventType = (type: string): type is keyof D & string => Object.hasOwn(events, type);
  return {
    events,
    aggregateTypes: [...new Set(Object.values(events).map((event) => event.aggregateType))],
    isEventType,
    payloadErrors: (type, payload) => {
      if (!isEventType(type)) return [`unknown event type ${JSON.stringify(type)}`];
      let validate = validators.get(type);
      if (validate === undefined) {
        validate = ajv.compile(schemaOf(type));
        validators.set(type, validate);
      }
      if (validate(payload)) return [];
      return (validate.errors ?? []).map(
        (error) => `${error.instancePath || '/'} ${error.message ?? 'is invalid'}`,
      );
    },
    schemaFiles() {
      const $schema = 'https://json-schema.org/draft/2020-12/schema';
      return Object.fromEntries(
        Object.keys(events).map((type) => [
          `${type}.json`,
          `${JSON.stringify({ $schema, ...schemaOf(type) }, null, 2)}\n`,
        ]),
      );
    },
  };
}

/**
 * Asserts that `payload` is a valid `type` event payload of `catalog`.
 *
 * @throws SluiceError `event_payload_invalid` listing every violation, or `event_type_unknown`.
 */
export function assertPayload<D extends EventDefinitions, T extends keyof D & string>(
  catalog: Catalog<D>,
  type: T | string,
  payload: unknown,
): asserts payload is PayloadOf<D, T> {
  if (!catalog.isEventType(type)) {
    throw new SluiceError<ContractsErrorCode>(
      'event_type_unknown',
      `Unknown event type ${JSON.stringify(type)}`,
    );
  }
  const errors = catalog.payloadErrors(type, payload);
  if (errors.length > 0) {
    throw new SluiceError<ContractsErrorCode>(
      'event_payload_invalid',
      `Invalid ${type} payload: ${errors.join('; ')}`,
    );
  }
}
