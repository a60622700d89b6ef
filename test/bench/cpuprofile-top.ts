// Summarizes V8 .cpuprofile files (node --cpu-prof) by self time: per function, per package
// (node_modules/<name>, workspace package, node internals), and the inclusive time of chosen
// functions.
//
//   pnpm exec tsx test/bench/cpuprofile-top.ts /tmp/relay-prof/*.cpuprofile [--top 30]
//     [--inclusive name1,name2] [--last-ms 20000]
//
// --last-ms counts only each profile's final milliseconds (e.g. an idle phase after start-up).
//
// Prints one JSON object on stdout.
import { readFileSync } from 'node:fs';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const args = process.argv.slice(2);
const option = (name: string) => {
  const at = args.indexOf(name);
  if (at < 0) return undefined;
  const value = args[at + 1];
  args.splice(at, 2);
  return value;
};
const top = Number(option('--top') ?? 30);
const inclusiveNames = (option('--inclusive') ?? '').split(',').filter((n) => n !== '');
const lastMs = Number(option('--last-ms') ?? Infinity);
if (args.length === 0) throw new Error('usage: cpuprofile-top.ts <file.cpuprofile>...');

/** The package a script belongs to, from its URL. */
function packageOf(url: string): string {
  if (url === '') return '(native/gc/idle)';
  if (url.startsWith('node:')) return 'node:internals';
  const pnpm = /node_modules\/\.pnpm\/[^/]+\/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pnpm?.[1] !== undefined) return pnpm[1];
  const modules = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (modules?.[1] !== undefined) return modules[1];
  const workspace = /\/(packages|services)\/([^/]+)\//.exec(url);
  if (workspace?.[2] !== undefined) return `${workspace[1] ?? ''}/${workspace[2]}`;
  return url;
}

const shortUrl = (url: string) =>
  url
    .replace(/^file:\/\/.*node_modules\/\.pnpm\/[^/]+\/node_modules\//, '')
    .replace(/^file:\/\/\/work\/main\//, '');

const selfByFunction = new Map<string, number>();
const selfByPackage = new Map<string, number>();
const inclusive = new Map<string, number>();
// Time in node internals and natives (Buffer.alloc, utf8Write, …) charged to the nearest
// caller in a package: what the package's code costs, all in.
const ownedByPackage = new Map<string, number>();
const ownedByFunction = new Map<string, number>();
let totalMs = 0;
let idleMs = 0;

for (const file of args) {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes)
    for (const child of node.children ?? []) parent.set(child, node.id);
  const selfUs = new Map<number, number>();
  const from = profile.endTime - lastMs * 1000;
  let at = profile.startTime;
  profile.samples.forEach((id, index) => {
    // timeDeltas[i] is the time before sample i; attribute the following delta to sample i.
    at += profile.timeDeltas[index] ?? 0;
    const delta = profile.timeDeltas[index + 1] ?? 0;
    if (at >= from) selfUs.set(id, (selfUs.get(id) ?? 0) + delta);
  });
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (node === undefined) continue;
    const ms = us / 1000;
    const { functionName, url, lineNumber } = node.callFrame;
    totalMs += ms;
    if (functionName === '(idle)') idleMs += ms;
    const key = `${functionName || '(anonymous)'} ${shortUrl(url)}:${lineNumber + 1}`;
    selfByFunction.set(key, (selfByFunction.get(key) ?? 0) + ms);
    const pkg = functionName === '(garbage collector)' ? '(gc)' : packageOf(url);
    selfByPackage.set(pkg, (selfByPackage.get(pkg) ?? 0) + ms);
    let owner: ProfileNode | undefined;
    for (let cursor: number | undefined = id; cursor !== undefined; cursor = parent.get(cursor)) {
      const frame = byId.get(cursor);
      if (frame === undefined) break;
      const framePackage = packageOf(frame.callFrame.url);
      if (framePackage !== 'node:internals' && framePackage !== '(native/gc/idle)') {
        owner = frame;
        break;
      }
    }
    const ownerPackage =
      owner === undefined
        ? functionName === '(garbage collector)'
          ? '(gc)'
          : functionName || '(native)'
        : packageOf(owner.callFrame.url);
    ownedByPackage.set(ownerPackage, (ownedByPackage.get(ownerPackage) ?? 0) + ms);
    const ownerKey =
      owner === undefined
        ? ownerPackage
        : `${owner.callFrame.functionName || '(anonymous)'} ${shortUrl(owner.callFrame.url)}:${owner.callFrame.lineNumber + 1}`;
    ownedByFunction.set(ownerKey, (ownedByFunction.get(ownerKey) ?? 0) + ms);
    // Inclusive time: each chosen function on the stack counts once per sample.
    const seen = new Set<string>();
    for (let cursor: number | undefined = id; cursor !== undefined; cursor = parent.get(cursor)) {
      const name = byId.get(cursor)?.callFrame.functionName ?? '';
      if (inclusiveNames.includes(name) && !seen.has(name)) {
        seen.add(name);
        inclusive.set(name, (inclusive.get(name) ?? 0) + ms);
      }
    }
  }
}

const busyMs = totalMs - idleMs;
const rows = (map: Map<string, number>, limit: number) =>
  [...map]
    .sort((a, b) => b[1] - a[1])
    .slice(0, limit)
    .map(([name, ms]) => ({
      name,
      ms: Math.round(ms),
      pctOfBusy: Math.round((ms / busyMs) * 1000) / 10,
    }));

process.stdout.write(
  `${JSON.stringify(
    {
      files: args.length,
      totalMs: Math.round(totalMs),
      idleMs: Math.round(idleMs),
      busyMs: Math.round(busyMs),
      byPackage: rows(selfByPackage, 25),
      byFunction: rows(selfByFunction, top),
      ownedByPackage: rows(ownedByPackage, 25),
      ownedByFunction: rows(ownedByFunction, top),
      inclusive: rows(inclusive, inclusiveNames.length),
    },
    null,
    2,
  )}\n`,
);
