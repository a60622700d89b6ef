// The services' process metrics: prom-client's defaults, with the event loop sampled every 100 ms.
import perfHooks from 'node:perf_hooks';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { collectProcessMetrics } from './process-metrics.js';

afterEach(() => vi.restoreAllMocks());

describe('collectProcessMetrics', () => {
  it('registers the default metrics and samples the event loop every 100 ms, not every 10', async () => {
    const monitor = vi.spyOn(perfHooks, 'monitorEventLoopDelay');
    const registry = new Registry();
    collectProcessMetrics(registry);
    expect(monitor).toHaveBeenCalledWith({ resolution: 100 });
    const text = await registry.metrics();
    for (const name of [
      'process_cpu_seconds_total',
      'process_resident_memory_bytes',
      'nodejs_eventloop_lag_p99_seconds',
      'nodejs_heap_size_used_bytes',
    ])
      expect(text).toContain(`# TYPE ${name}`);
  });
});
