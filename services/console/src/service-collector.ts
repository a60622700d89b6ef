// Reads a service's /readyz and /metrics (and a projector's /projections) over HTTP.
import { errorMessage } from '@sluice/errors';
import { Metrics } from './prometheus.js';
import type { HostedProjection, ProjectorReading, ServiceReading } from './sample.js';

/**
 * How long one request to a service may take before the service counts as unreachable: longer
 * than a service's readiness takes to say its check does not answer (2 s), so that one waiting on
 * its database reads as not ready, not as unreachable.
 */
const TIMEOUT_MS = 3000;

async function getJson(url: string, headers: Record<string, string>) {
  const response = await fetch(url, { headers, signal: AbortSignal.timeout(TIMEOUT_MS) });
  const body: unknown = await response.json().catch(() => undefined);
  return { status: response.status, body };
}

const stringField = (body: unknown, name: string): string | undefined => {
  const value = (body as Record<string, unknown> | undefined)?.[name];
  return typeof value === 'string' ? value : undefined;
};

/** `url`'s readiness and metrics; an unreachable service is `reachable: false`, never a throw. */
export async function collectService(url: string): Promise<ServiceReading> {
  try {
    const [ready, metricsText] = await Promise.all([
      getJson(`${url}/readyz`, {}),
      fetch(`${url}/metrics`, { signal: AbortSignal.timeout(TIMEOUT_MS) }).then((r) => r.text()),
    ]);
    const message = stringField(ready.body, 'message');
    return {
      url,
      reachable: true,
      ready: ready.status === 200,
      status: stringField(ready.body, 'status') ?? null,
      ...(message === undefined ? {} : { message }),
      metrics: Metrics.parse(metricsText),
    };
  } catch (error) {
    return { url, reachable: false, ready: false, status: null, message: errorMessage(error) };
  }
}

interface ProjectionsAnswer {
  items?: { projection: string; rebuild?: { generation: number; behind: number } | null }[];
}

/** A projector's service reading and the projections it hosts (its operations `/projections`). */
export async function collectProjector(
  url: string,
  headers: Record<string, string>,
): Promise<ProjectorReading> {
  const [service, hosted] = await Promise.all([
    collectService(url),
    getJson(`${url}/projections`, headers).then(
      ({ status, body }) => (status === 200 ? hostedOf(body as ProjectionsAnswer) : []),
      () => [],
    ),
  ]);
  return { ...service, hosted };
}

function hostedOf(answer: ProjectionsAnswer): HostedProjection[] {
  return (answer.items ?? []).map(({ projection, rebuild }) => ({
    projection,
    ...(rebuild == null
      ? {}
      : { rebuild: { generation: rebuild.generation, behind: rebuild.behind } }),
  }));
}
