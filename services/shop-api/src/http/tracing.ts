import {
  SpanAttribute,
  SpanKind,
  SpanStatusCode,
  context,
  contextOf,
  trace,
  type Span,
  type Tracer,
} from '@sluice/tracing';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { safeHeader } from './request-context.js';

/** Probes and scrapes: not traced. */
const PROBES = new Set(['/healthz', '/readyz', '/metrics']);

/**
 * An HTTP server span per request (OpenTelemetry's HTTP conventions), a child of the caller's
 * `traceparent`, active while the request is handled: the spans of its transaction and waits
 * are its children, and its log lines carry its ids.
 */
export function installRequestSpans(app: FastifyInstance, tracer: Tracer): void {
  const spans = new WeakMap<FastifyRequest, Span>();
  app.addHook('onRequest', (request, _reply, done) => {
    const route = request.routeOptions.url;
    if (route !== undefined && PROBES.has(route)) return done();
    const parent = contextOf(safeHeader(request, 'traceparent'));
    const span = tracer.startSpan(
      route === undefined ? request.method : `${request.method} ${route}`,
      {
        kind: SpanKind.SERVER,
        attributes: {
          [SpanAttribute.httpMethod]: request.method,
          [SpanAttribute.urlPath]: request.url.split('?')[0] ?? request.url,
          [SpanAttribute.urlScheme]: request.protocol,
          ...(route === undefined ? {} : { [SpanAttribute.httpRoute]: route }),
          'sluice.correlation_id': request.id,
        },
      },
      parent,
    );
    spans.set(request, span);
    context.with(trace.setSpan(parent, span), done);
  });
  const end = (request: FastifyRequest, status: number | undefined) => {
    const span = spans.get(request);
    if (span === undefined) return;
    spans.delete(request);
    if (status === undefined) span.setStatus({ code: SpanStatusCode.ERROR, message: 'aborted' });
    else {
      span.setAttribute(SpanAttribute.httpStatus, status);
      if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
    }
    span.end();
  };
  app.addHook('onResponse', (request, reply, done) => {
    end(request, reply.statusCode);
    done();
  });
  app.addHook('onRequestAbort', (request, done) => {
    end(request, undefined);
    done();
  });
}
