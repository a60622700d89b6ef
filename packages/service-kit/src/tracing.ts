import type { Tracer } from '@opentelemetry/api';
import type { Logger } from 'pino';

/** OpenTelemetry tracing of a service, as the standard `OTEL_*` variables configure it. */
export interface Tracing {
  /** Undefined when tracing is off: nothing is traced and nothing is paid for it. */
  tracer: Tracer | undefined;
  /** Exports the spans still buffered (at most 5 s) and stops. */
  shutdown(): Promise<void>;
}

const EXPORTERS = ['otlp', 'none'];
const PROTOCOLS = ['http/protobuf', 'http/json'];
const SAMPLERS = [
  'always_on',
  'always_off',
  'traceidratio',
  'parentbased_always_on',
  'parentbased_always_off',
  'parentbased_traceidratio',
];

const set = (value: string | undefined): value is string =>
  value !== undefined && value.trim() !== '';
const listOf = (value: string | undefined): string[] =>
  (value ?? '')
    .split(',')
    .map((item) => item.trim().toLowerCase())
    .filter((item) => item !== '');

/** The OTLP protocol for traces: `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, then the general one. */
function protocolOf(env: NodeJS.ProcessEnv): string {
  const traces = env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL;
  const general = env.OTEL_EXPORTER_OTLP_PROTOCOL;
  return (set(traces) ? traces : set(general) ? general : 'http/protobuf').trim().toLowerCase();
}

/**
 * Whether `env` turns tracing on: `OTEL_TRACES_EXPORTER=otlp`, or an OTLP endpoint
 * (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) with no exporter named;
 * never with `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
 */
export function tracingEnabled(env: NodeJS.ProcessEnv): boolean {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return false;
  const exporters = listOf(env.OTEL_TRACES_EXPORTER);
  if (exporters.length > 0) return exporters.includes('otlp');
  return set(env.OTEL_EXPORTER_OTLP_ENDPOINT) || set(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
}

function urlProblem(name: string, value: string | undefined): string[] {
  if (!set(value) || /^https?:$/.test(URL.parse(value.trim())?.protocol ?? '')) return [];
  return [`${name} must be an http(s) URL (is ${JSON.stringify(value)})`];
}

/** What is wrong with the `OTEL_*` tracing variables, one line each. */
export function tracingProblems(env: NodeJS.ProcessEnv): string[] {
  const problems: string[] = [];
  const unknown = listOf(env.OTEL_TRACES_EXPORTER).filter((name) => !EXPORTERS.includes(name));
  if (unknown.length > 0)
    problems.push(`OTEL_TRACES_EXPORTER must be otlp or none (is ${unknown.join(', ')})`);
  const protocol = protocolOf(env);
  if (!PROTOCOLS.includes(protocol))
    problems.push(`the OTLP protocol must be one of ${PROTOCOLS.join(', ')} (is ${protocol})`);
  const sampler = env.OTEL_TRACES_SAMPLER?.trim().toLowerCase();
  if (set(sampler) && !SAMPLERS.includes(sampler))
    problems.push(`OTEL_TRACES_SAMPLER must be one of ${SAMPLERS.join(', ')} (is ${sampler})`);
  const ratio = env.OTEL_TRACES_SAMPLER_ARG;
  if (set(ratio) && !(Number(ratio) >= 0 && Number(ratio) <= 1))
    problems.push(`OTEL_TRACES_SAMPLER_ARG must be a number 0..1 (is ${JSON.stringify(ratio)})`);
  problems.push(...urlProblem('OTEL_EXPORTER_OTLP_ENDPOINT', env.OTEL_EXPORTER_OTLP_ENDPOINT));
  problems.push(
    ...urlProblem('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT),
  );
  return problems;
}

/** OpenTelemetry's own complaints (an exporter that cannot reach its collector), at most one a minute. */
function diagnosticsTo(logger: Logger) {
  let lastAt = 0;
  const warn = (message: string) => {
    if (Date.now() - lastAt < 60_000) return;
    lastAt = Date.now();
    logger.warn({ detail: message.slice(0, 500) }, 'tracing: spans could not be exported');
  };
  const quiet = () => undefined;
  return { error: warn, warn, info: quiet, debug: quiet, verbose: quiet };
}

/**
 * Starts OpenTelemetry tracing when the standard `OTEL_*` variables ask for it (see
 * {@link tracingEnabled}): the official Node SDK with an OTLP/HTTP exporter (`http/protobuf` or
 * `http/json`), batched, sampled by `OTEL_TRACES_SAMPLER`, named by `OTEL_SERVICE_NAME` or
 * `service`. Off, it loads nothing.
 */
export async function startTracing(options: {
  service: string;
  logger: Logger;
  env?: NodeJS.ProcessEnv;
}): Promise<Tracing> {
  const env = options.env ?? process.env;
  if (!tracingEnabled(env)) return { tracer: undefined, shutdown: () => Promise.resolve() };
  const [api, sdk, resources] = await Promise.all([
    import('@opentelemetry/api'),
    import('@opentelemetry/sdk-trace-node'),
    import('@opentelemetry/resources'),
  ]);
  const { OTLPTraceExporter } =
    protocolOf(env) === 'http/json'
      ? await import('@opentelemetry/exporter-trace-otlp-http')
      : await import('@opentelemetry/exporter-trace-otlp-proto');
  api.diag.setLogger(diagnosticsTo(options.logger), api.DiagLogLevel.WARN);
  const resource = resources
    .resourceFromAttributes({ 'service.name': options.service })
    .merge(resources.detectResources({ detectors: [resources.envDetector] }));
  const provider = new sdk.NodeTracerProvider({
    resource,
    spanProcessors: [new sdk.BatchSpanProcessor(new OTLPTraceExporter())],
  });
  provider.register();
  options.logger.info(
    { protocol: protocolOf(env), sampler: env.OTEL_TRACES_SAMPLER ?? 'parentbased_always_on' },
    'tracing on',
  );
  return {
    tracer: provider.getTracer('sluice'),
    shutdown: () =>
      Promise.race([
        provider.shutdown(),
        new Promise<void>((resolve) => setTimeout(resolve, 5000).unref()),
      ]).catch(() => undefined),
  };
}
