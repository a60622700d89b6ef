import { configProblems } from '@sluice/service-kit';
import { describe, expect, it } from 'vitest';
import { consoleConfigSchema } from './config.js';
import { traceUrlOf } from './journey.js';

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';

function problemsOf(traceUrl: string): string[] {
  return configProblems(consoleConfigSchema, {
    DATABASE_URL: 'postgres://localhost/sluice',
    KAFKA_BROKERS: 'localhost:9092',
    CONSOLE_TRACE_URL: traceUrl,
  }).filter((problem) => problem.startsWith('CONSOLE_TRACE_URL'));
}

describe('CONSOLE_TRACE_URL', () => {
  it('accepts an http(s) URL with {traceId} in its path, query or fragment, or nothing', () => {
    for (const url of [
      '',
      'http://localhost:16686/trace/{traceId}',
      'https://tempo.example.com/explore?left={"queries":[{"query":"{traceId}"}]}',
      'https://ui.example.com/#/traces/{traceId}?from={traceId}',
    ]) {
      expect(problemsOf(url), url).toEqual([]);
    }
  });

  it('refuses a URL without {traceId}, of another scheme, or without a host', () => {
    for (const url of [
      'http://localhost:16686/trace/',
      'http://localhost:16686/trace/{traceid}',
      'ftp://localhost/{traceId}',
      'localhost:16686/trace/{traceId}',
      'http:///trace/{traceId}',
      'http://{traceId}.example.com/',
      'http://localhost/trace /{traceId}',
    ]) {
      expect(problemsOf(url), url).toHaveLength(1);
    }
  });
});

describe('traceUrlOf', () => {
  it('puts the trace id in every {traceId} of the template', () => {
    expect(traceUrlOf('http://localhost:16686/trace/{traceId}', TRACE_ID)).toBe(
      `http://localhost:16686/trace/${TRACE_ID}`,
    );
    expect(traceUrlOf('https://ui/#/{traceId}?q={traceId}', TRACE_ID)).toBe(
      `https://ui/#/${TRACE_ID}?q=${TRACE_ID}`,
    );
  });

  it('is null without a template or a valid trace id', () => {
    const template = 'http://localhost:16686/trace/{traceId}';
    expect(traceUrlOf(undefined, TRACE_ID)).toBeNull();
    expect(traceUrlOf('', TRACE_ID)).toBeNull();
    expect(traceUrlOf(template, null)).toBeNull();
    expect(traceUrlOf(template, 'not-a-trace-id')).toBeNull();
    expect(traceUrlOf(template, `${TRACE_ID}/../../admin`)).toBeNull();
  });
});
