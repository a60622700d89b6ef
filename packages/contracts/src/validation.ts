import { SluiceError } from '@sluice/errors';
import { Ajv, type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';
import { catalog, isEventType, type EventPayload, type EventType } from './catalog.js';
import type { ContractsErrorCode } from './errors.js';

const ajv = new Ajv({ allErrors: true, strict: true });
addFormats.default(ajv);
const validators = new Map<string, ValidateFunction>();

function validatorFor(type: EventType): ValidateFunction {
  let validate = validators.get(type);
  if (validate === undefined) {
    validate = ajv.compile(catalog[type].schema);
    validators.set(type, validate);
  }
  return validate;
}

/** Why a payload does not match its schema: one line per violation, empty when valid. */
export function payloadErrors(type: string, payload: unknown): string[] {
  if (!isEventType(type)) return [`unknown event type ${JSON.stringify(type)}`];
  const validate = validatorFor(type);
  if (validate(payload)) return [];
  return (validate.errors ?? []).map(
    (error) => `${error.instancePath || '/'} ${error.message ?? 'is invalid'}`,
  );
}

/**
 * Asserts that `payload` is a valid `type` event payload.
 *
 * @throws SluiceError `event_payload_invalid` listing every violation, or `event_type_unknown`.
 */
export function assertPayload<T extends EventType>(
  type: T | string,
  payload: unknown,
): asserts payload is EventPayload<T> {
  if (!isEventType(type)) {
    throw new SluiceError<ContractsErrorCode>(
      'event_type_unknown',
      `Unknown event type ${JSON.stringify(type)}`,
    );
  }
  const errors = payloadErrors(type, payload);
  if (errors.length > 0) {
    throw new SluiceError<ContractsErrorCode>(
      'event_payload_invalid',
      `Invalid ${type} payload: ${errors.join('; ')}`,
    );
  }
}
