import type { AppendContext } from '@sluice/outbox';
import type { FastifyRequest } from 'fastify';
import { trace, traceparentOf } from '@sluice/tracing';
import { randomBytes } from 'node:crypto';
import { identityOf } from './authentication.js';

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const SAFE_HEADER = /^[\x20-\x7e]{1,200}$/;

/**
 * The W3C trace context for this request when it is not traced: a child of the caller's
 * `traceparent` when valid, a new trace otherwise.
 */
function traceparentFor(header: string | undefined): string {
  const match = header === undefined ? null : TRACEPARENT.exec(header);
  const traceId = match?.[1];
  const spanId = randomBytes(8).toString('hex');
  if (
    match !== null &&
    traceId !== undefined &&
    !/^0+$/.test(traceId) &&
    !/^0+$/.test(match[2] ?? '')
  ) {
    return `00-${traceId}-${spanId}-${match[3] ?? '01'}`;
  }
  return `00-${randomBytes(16).toString('hex')}-${spanId}-01`;
}

/** The active span's context (the request's transaction, when traced): the one source of truth. */
function activeTraceparent(): string | undefined {
  const active = trace.getActiveSpan()?.spanContext();
  return active === undefined ? undefined : traceparentOf(active);
}

/** A request header's value when it is one short printable string; undefined otherwise. */
export function safeHeader(request: FastifyRequest, name: string): string | undefined {
  const value = request.headers[name];
  return typeof value === 'string' && SAFE_HEADER.test(value) ? value : undefined;
}

/** Correlation id accepted from the caller when it is short and printable; generated otherwise. */
export function correlationIdFor(value: string | string[] | undefined): string | undefined {
  return typeof value === 'string' && /^[A-Za-z0-9._:-]{1,128}$/.test(value) ? value : undefined;
}

/**
 * Who, why and which trace: what every event written by this request carries. The actor is the
 * verified token's subject; `X-Reason` is the caller's free text.
 */
export function requestContext(request: FastifyRequest): AppendContext {
  const context: AppendContext = {
    traceparent: activeTraceparent() ?? traceparentFor(safeHeader(request, 'traceparent')),
    correlationId: request.id,
    actor: identityOf(request).subject,
  };
  const reason = safeHeader(request, 'x-reason');
  if (reason !== undefined) context.reason = reason;
  return context;
}
