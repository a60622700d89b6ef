import type { FastifyInstance } from 'fastify';
import { ProblemError } from './problems.js';

interface BodyNode {
  value: unknown;
  /** `/index` or `/key` below the parent, or ` key` for one of the parent's keys. */
  step: string;
  parent: BodyNode | undefined;
}

function pathOf(node: BodyNode): string {
  const steps: string[] = [];
  for (let at: BodyNode | undefined = node; at !== undefined; at = at.parent) steps.push(at.step);
  return steps.reverse().join('');
}

/**
 * Finds the first string (value or key) PostgreSQL would refuse or silently corrupt. Walks with
 * an explicit stack, not recursion: a 64 KiB body can nest 20 000 levels deep, which would
 * overflow the call stack (a RangeError, so a 500); paths are built only for the culprit.
 */
function unsafeString(body: unknown): string | undefined {
  const stack: BodyNode[] = [{ value: body, step: 'body', parent: undefined }];
  for (let node = stack.pop(); node !== undefined; node = stack.pop()) {
    const { value } = node;
    if (typeof value === 'string') {
      if (value.includes('\u0000')) return `${pathOf(node)} contains a NUL character`;
      if (!value.isWellFormed()) {
        return `${pathOf(node)} contains a lone surrogate (not valid Unicode)`;
      }
    } else if (Array.isArray(value)) {
      for (let index = value.length - 1; index >= 0; index -= 1) {
        stack.push({ value: value[index] as unknown, step: `/${index}`, parent: node });
      }
    } else if (value !== null && typeof value === 'object') {
      const entries = Object.entries(value as Record<string, unknown>);
      for (let index = entries.length - 1; index >= 0; index -= 1) {
        const [key, item] = entries[index] ?? ['', undefined];
        stack.push(
          { value: item, step: `/${key}`, parent: node },
          { value: key, step: ' key', parent: node },
        );
      }
    }
  }
  return undefined;
}

/** Refuses bodies that are not JSON (415) or hold strings PostgreSQL cannot store (400). */
export function installBodyGuards(app: FastifyInstance): void {
  // Fastify parses text/plain into a string by default; every body here is JSON, so anything
  // else is a 415 rather than a 400 for "body must be object".
  app.removeContentTypeParser('text/plain');
  app.addHook('preValidation', (request, _reply, done) => {
    const problem = unsafeString(request.body);
    done(problem === undefined ? undefined : new ProblemError(400, 'invalid_string', problem));
  });
}
