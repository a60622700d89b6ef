// A service's /metrics read back: the Prometheus text (or OpenMetrics) format's sample lines, and the
// few questions the console asks of them (a sum over labels, a histogram's buckets, a quantile).
// parse-prometheus-text-format, the parser on npm, drops the labels of histograms.

/** Labels a sample must carry (a subset of its labels). */
export type LabelMatch = Readonly<Record<string, string>>;

/** One bucket of a cumulative histogram: observations at or below `le`. */
export interface Bucket {
  le: number;
  count: number;
}

interface Sample {
  labels: Record<string, string>;
  value: number;
}

// An OpenMetrics exemplar may follow the value and timestamp: ` # {trace_id="…"} 0.12 1700000000.5`.
const SAMPLE_LINE =
  /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[^"}]|"(?:[^"\\]|\\.)*")*)\})?\s+(\S+)(?:\s+-?[\d.]+)?(?:\s+#\s+\{.*\}.*)?$/;
const LABEL = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)/y;
const UNESCAPE: Record<string, string> = { n: '\n', '\\': '\\', '"': '"' };

function parseValue(text: string): number {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  const value = Number(text);
  if (Number.isNaN(value) && text !== 'NaN') throw new Error(`not a sample value: ${text}`);
  return value;
}

function parseLabels(text: string, line: string): Record<string, string> {
  const labels: Record<string, string> = {};
  LABEL.lastIndex = 0;
  while (LABEL.lastIndex < text.length) {
    const match = LABEL.exec(text);
    if (match === null) throw new Error(`malformed labels in metrics line: ${line}`);
    const [, name = '', value = ''] = match;
    labels[name] = value.replace(/\\(.)/g, (_all, c: string) => UNESCAPE[c] ?? c);
  }
  return labels;
}

const matches = (labels: Record<string, string>, match: LabelMatch) =>
  Object.entries(match).every(([name, value]) => labels[name] === value);

/** Parsed metrics of one scrape. */
export class Metrics {
  private constructor(private readonly byName: ReadonlyMap<string, readonly Sample[]>) {}

  /** Parses the Prometheus text exposition format; a malformed line throws. */
  static parse(text: string): Metrics {
    const byName = new Map<string, Sample[]>();
    for (const raw of text.split('\n')) {
      const line = raw.trim();
      if (line === '' || line.startsWith('#')) continue;
      const match = SAMPLE_LINE.exec(line);
      if (match === null) throw new Error(`malformed metrics line: ${line}`);
      const [, name = '', labels, value = ''] = match;
      const samples = byName.get(name) ?? [];
      samples.push({ labels: parseLabels(labels ?? '', line), value: parseValue(value) });
      byName.set(name, samples);
    }
    return new Metrics(byName);
  }

  /** The label sets and values of the samples named `name` that carry `match`. */
  samples(name: string, match: LabelMatch = {}): Sample[] {
    return (this.byName.get(name) ?? []).filter((sample) => matches(sample.labels, match));
  }

  /** The sum of the samples named `name` that carry `match`; undefined when there is none. */
  sum(name: string, match: LabelMatch = {}): number | undefined {
    const found = this.samples(name, match);
    return found.length === 0 ? undefined : found.reduce((total, s) => total + s.value, 0);
  }

  /** Histogram `name`'s buckets, added up over the label sets that carry `match`. */
  buckets(name: string, match: LabelMatch = {}): Bucket[] {
    const totals = new Map<number, number>();
    for (const { labels, value } of this.samples(`${name}_bucket`, match)) {
      const le = parseValue(labels.le ?? '+Inf');
      totals.set(le, (totals.get(le) ?? 0) + value);
    }
    return [...totals].map(([le, count]) => ({ le, count })).sort((a, b) => a.le - b.le);
  }
}

/** The observations of `later` not yet in `earlier` (counters restart at 0 with a process). */
export function bucketsSince(later: readonly Bucket[], earlier: readonly Bucket[]): Bucket[] {
  const before = new Map(earlier.map((bucket) => [bucket.le, bucket.count]));
  const delta = later.map(({ le, count }) => ({ le, count: count - (before.get(le) ?? 0) }));
  return delta.some((bucket) => bucket.count < 0) ? [...later] : delta;
}

/**
 * The `q` quantile of cumulative `buckets`, interpolated linearly inside a bucket as PromQL's
 * histogram_quantile does; null without observations. Past the last finite bound: that bound.
 *
 * @example quantile(0.5, [{ le: 1, count: 2 }, { le: Infinity, count: 2 }]) // 0.5
 */
export function quantile(q: number, buckets: readonly Bucket[]): number | null {
  const total = buckets.at(-1)?.count ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const { le, count } of buckets) {
    if (count >= rank) {
      if (le === Infinity) return lower;
      return count === below ? le : lower + ((le - lower) * (rank - below)) / (count - below);
    }
    if (le !== Infinity) lower = le;
    below = count;
  }
  return lower;
}
