// deploy/helm/sluice: `helm lint`, and `helm template` validated by kubeconform against the
// Kubernetes schemas, made from the OpenAPI document infra/bootstrap.sh fetched.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeKubernetesSchemas } from './kubernetes-schemas.js';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const chart = join(rootDir, 'deploy', 'helm', 'sluice');
const fullValues = join(rootDir, 'test', 'deploy', 'full-values.yaml');
const toolsDir = process.env.SLUICE_TOOLS_DIR ?? join(homedir(), '.cache', 'sluice-tools');
const helm = join(toolsDir, 'bin', 'helm');
const kubeconform = join(toolsDir, 'bin', 'kubeconform');
const KUBE_VERSION = '1.34.0';
const schemas = mkdtempSync(join(tmpdir(), 'sluice-kubernetes-schemas-'));

afterAll(() => rmSync(schemas, { recursive: true, force: true }));

function run(
  command: string,
  args: readonly string[],
  input?: string,
): Promise<{ code: number | null; output: string; stdout: string }> {
  const child = spawn(command, args, { cwd: rootDir, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let output = '';
  child.stdout.on(
    'data',
    (chunk: Buffer) => ((stdout += chunk.toString()), (output += chunk.toString())),
  );
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stdin.end(input);
  return new Promise((done) => child.once('exit', (code) => done({ code, output, stdout })));
}

const template = (...args: string[]) =>
  run(helm, ['template', 'shop', chart, '--kube-version', KUBE_VERSION, ...args]);

const validate = (manifests: string) =>
  run(
    kubeconform,
    [
      '-strict',
      '-summary',
      '-schema-location',
      `${schemas}/{{ .ResourceKind }}{{ .KindSuffix }}.json`,
    ],
    manifests,
  );

type Manifest = {
  kind: string;
  metadata: { name: string };
  spec?: Record<string, unknown>;
};

type Probe = { httpGet: { path: string } };
type PodSpec = {
  securityContext: { runAsNonRoot?: boolean };
  containers: {
    livenessProbe: Probe;
    readinessProbe: Probe;
    securityContext: { readOnlyRootFilesystem?: boolean };
    env: unknown[];
  }[];
};

function manifests(text: string): Manifest[] {
  return parseAllDocuments(text)
    .map((document) => document.toJS() as Manifest | null)
    .filter((manifest): manifest is Manifest => manifest !== null);
}

beforeAll(() => {
  const swagger = readdirSync(toolsDir).find((name) => /^kubernetes-.*-swagger\.json$/.test(name));
  expect(
    swagger,
    `Kubernetes' OpenAPI document in ${toolsDir}: run infra/bootstrap.sh`,
  ).toBeDefined();
  expect(
    existsSync(helm) && existsSync(kubeconform),
    'helm and kubeconform: run infra/bootstrap.sh',
  ).toBe(true);
  expect(writeKubernetesSchemas(join(toolsDir, swagger ?? ''), schemas)).toBeGreaterThan(100);
});

describe.each([
  ['default values', [] as string[], 14],
  ['every option', ['-f', fullValues], 16],
])('the chart with %s', (_name, values, count) => {
  it('passes helm lint', async () => {
    const lint = await run(helm, [
      'lint',
      chart,
      '--strict',
      '--kube-version',
      KUBE_VERSION,
      ...values,
    ]);
    expect(lint.code, lint.output).toBe(0);
  });

  it('renders manifests valid against the Kubernetes schemas', async () => {
    const rendered = await template(...values);
    expect(rendered.code, rendered.output).toBe(0);
    const checked = await validate(rendered.stdout);
    expect(checked.code, checked.output).toBe(0);
    expect(checked.output).toContain(
      `${count} resources found parsing stdin - Valid: ${count}, Invalid: 0, Errors: 0, Skipped: 0`,
    );
  });
});

it('runs a leader and a standby relay, probed on /healthz and /readyz, as non-root', async () => {
  const rendered = manifests((await template()).stdout);
  const relay = rendered.find(
    (m) => m.kind === 'Deployment' && m.metadata.name === 'shop-sluice-relay',
  );
  expect(relay?.spec?.replicas).toBe(2);
  const pod = (relay?.spec?.template as { spec: PodSpec }).spec;
  const [container] = pod.containers;
  expect(container?.livenessProbe.httpGet.path).toBe('/healthz');
  expect(container?.readinessProbe.httpGet.path).toBe('/readyz');
  expect(container?.securityContext.readOnlyRootFilesystem).toBe(true);
  expect(pod.securityContext.runAsNonRoot).toBe(true);
  expect(container?.env).toContainEqual({
    name: 'DATABASE_URL',
    valueFrom: { secretKeyRef: { name: 'sluice', key: 'DATABASE_URL' } },
  });
});

it('gives the relay and the projector a young generation sized for their memory limits', async () => {
  const rendered = manifests((await template()).stdout);
  const envOf = (name: string) => {
    const deployment = rendered.find((m) => m.kind === 'Deployment' && m.metadata.name === name);
    return (deployment?.spec?.template as { spec: PodSpec } | undefined)?.spec.containers[0]?.env;
  };
  expect(envOf('shop-sluice-relay')).toContainEqual({
    name: 'NODE_OPTIONS',
    value: '--max-semi-space-size=4',
  });
  expect(envOf('shop-sluice-projector')).toContainEqual({
    name: 'NODE_OPTIONS',
    value: '--max-semi-space-size=8',
  });
  // A team's own NODE_OPTIONS replaces it.
  const own = manifests(
    (await template('--set', 'projector.env.NODE_OPTIONS=--max-old-space-size=700')).stdout,
  );
  const projector = own.find(
    (m) => m.kind === 'Deployment' && m.metadata.name === 'shop-sluice-projector',
  );
  const env = (projector?.spec?.template as { spec: PodSpec }).spec.containers[0]?.env;
  expect(env?.filter((entry) => (entry as { name: string }).name === 'NODE_OPTIONS')).toEqual([
    { name: 'NODE_OPTIONS', value: '--max-old-space-size=700' },
  ]);
});

it('carries the alert rules of infra/prometheus unchanged into the PrometheusRule', async () => {
  const file = (path: string) => readFileSync(path, 'utf8');
  expect(file(join(chart, 'files', 'sluice-alerts.yml'))).toBe(
    file(join(rootDir, 'infra', 'prometheus', 'sluice-alerts.yml')),
  );
  const rule = manifests((await template('-f', fullValues)).stdout).find(
    (m) => m.kind === 'PrometheusRule',
  );
  const groups = rule?.spec?.groups as { rules: { annotations?: Record<string, string> }[] }[];
  expect(groups.length).toBeGreaterThan(0);
  expect(JSON.stringify(groups)).toContain('{{ $labels.job }}');
});

it('fails validation for a malformed value', async () => {
  const rendered = await template('--set', 'relay.replicas=two');
  expect(rendered.code, rendered.output).toBe(0);
  const checked = await validate(rendered.stdout);
  expect(checked.code).not.toBe(0);
  expect(checked.output).toMatch(/Deployment shop-sluice-relay is invalid.*\/spec\/replicas/);
});

it('refuses to render without the Secret holding DATABASE_URL', async () => {
  const rendered = await template('--set', 'secrets.existingSecret=');
  expect(rendered.code).not.toBe(0);
  expect(rendered.output).toContain('secrets.existingSecret names the Secret holding DATABASE_URL');
});
