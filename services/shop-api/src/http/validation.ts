import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import type { FastifyInstance } from 'fastify';
import { ProblemError } from './problems.js';

/**
 * Request bodies are validated strictly (no coercion, unknown fields rejected); path and query
 * strings are coerced from text, as they can only be text.
 */
export function installValidators(app: FastifyInstance): void {
  const strict = new Ajv({
    allErrors: false,
    coerceTypes: false,
    removeAdditional: false,
    useDefaults: true,
  });
  const lenient = new Ajv({
    allErrors: false,
    coerceTypes: true,
    removeAdditional: false,
    useDefaults: true,
  });
  addFormats.default(strict);
  addFormats.default(lenient);
  app.setValidatorCompiler(({ schema, httpPart }) => {
    if (httpPart === 'body') return strict.compile(schema);
    const validate = lenient.compile(schema);
    // Ajv coerces "1e400" to Infinity, then skips minimum/maximum (they only judge finite
    // numbers), so `?limit=1e400` would reach SQL as `LIMIT Infinity` and fail as a 500.
    const checked = (data: unknown) => {
      const valid = validate(data);
      checked.errors = validate.errors ?? null;
      const field = valid ? nonFiniteField(data) : undefined;
      if (field === undefined) return valid;
      return {
        error: new ProblemError(400, 'invalid_request', `${httpPart}/${field} must be finite`),
      };
    };
    checked.errors = validate.errors ?? null;
    return checked;
  });
}

function nonFiniteField(data: unknown): string | undefined {
  if (data === null || typeof data !== 'object') return undefined;
  return Object.entries(data).find(
    ([, value]) => typeof value === 'number' && !Number.isFinite(value),
  )?.[0];
}
