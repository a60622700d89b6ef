// Projections: state, generations, per partition checkpoint vs end offset, lag trend; rebuilds.
import { useRef, useState } from 'preact/hooks';
import { api, type Generation, type Projection, type Projections } from '../api.js';
import { TrendChart } from '../chart.js';
import { duration, num } from '../format.js';
import { ActionResult, Badge, ConfirmDialog, statusOf } from '../ui.js';

interface Sample {
  at: number;
  behind: number;
}

/** The generation being built: the newest one that reports how far behind it is. */
function building(generations: Generation[]): Generation | undefined {
  return generations
    .filter((generation) => generation.behind !== undefined && generation.state !== 'active')
    .sort((a, b) => b.generation - a.generation)[0];
}

const TREND_WINDOW_MS = 60_000;

/** Progress of a rebuild from the samples of `behind` seen so far, and an ETA from their trend. */
function progress(samples: Sample[]): { done: number; etaMs: number | undefined } {
  const last = samples.at(-1);
  if (last === undefined) return { done: 0, etaMs: undefined };
  const most = Math.max(...samples.map((sample) => sample.behind));
  const first = samples.find((sample) => sample.at >= last.at - TREND_WINDOW_MS) ?? last;
  const rate = (first.behind - last.behind) / (last.at - first.at);
  return {
    done: most === 0 ? 1 : 1 - last.behind / most,
    etaMs: rate > 0 ? last.behind / rate : undefined,
  };
}

function RebuildProgress({ projection }: { projection: Projection }) {
  const samples = useRef<{ generation: number; list: Sample[] }>({ generation: -1, list: [] });
  const target = building(projection.generations);
  if (target?.behind !== undefined) {
    if (samples.current.generation !== target.generation) {
      samples.current = { generation: target.generation, list: [] };
    }
    const list = samples.current.list;
    if (list.at(-1)?.behind !== target.behind) list.push({ at: Date.now(), behind: target.behind });
  }
  if (target === undefined) return null;
  const { done, etaMs } = progress(samples.current.list);
  return (
    <div class="rebuild" data-testid="rebuild-progress">
      <label>
        Generation {target.generation} rebuilding: {num(target.behind)} behind (
        {Math.round(done * 100)} % done)
        <progress max={1} value={done} />
      </label>
      <span data-testid="rebuild-eta">
        {etaMs === undefined ? 'ETA: measuring…' : `ETA: ${duration(etaMs)}`}
      </span>
    </div>
  );
}

function Partitions({ projection }: { projection: Projection }) {
  return (
    <table data-testid="partitions">
      <thead>
        <tr>
          <th>topic</th>
          <th>partition</th>
          <th>checkpoint</th>
          <th>end offset</th>
          <th>lag</th>
        </tr>
      </thead>
      <tbody>
        {projection.partitions.map((row) => (
          <tr key={`${row.topic}-${row.partition}`}>
            <td>{row.topic}</td>
            <td>{row.partition}</td>
            <td>{row.checkpoint === null ? '—' : num(row.checkpoint)}</td>
            <td>{num(row.endOffset)}</td>
            <td>{num(row.lag)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

type Action = 'rebuild' | 'cancel';

function ProjectionCard({ projection, operator }: { projection: Projection; operator: boolean }) {
  const [action, setAction] = useState<Action | undefined>(undefined);
  const [result, setResult] = useState<string | undefined>(undefined);
  const path = `/projections/${encodeURIComponent(projection.name)}/rebuild`;
  const run = async (reason: string): Promise<void> => {
    if (action === 'rebuild') {
      const answer = await api<{ generation: number }>(path, 'POST', { reason });
      setResult(`Rebuild started: generation ${answer.generation}.`);
    } else {
      setResult(`Rebuild cancelled: ${JSON.stringify(await api(path, 'DELETE', { reason }))}`);
    }
  };
  return (
    <article
      class="card"
      data-testid={`projection-${projection.name}`}
      data-state={projection.state}
    >
      <h2>
        {projection.name} <Badge status={statusOf(projection.state)}>{projection.state}</Badge>
      </h2>
      {projection.reason !== undefined && <p class="reason">{projection.reason}</p>}
      <p>
        Generations:{' '}
        {projection.generations.map((generation) => (
          <span key={generation.generation} class="generation" data-testid="generation">
            {generation.generation} ({generation.state})
          </span>
        ))}{' '}
        · parked aggregates {num(projection.parkedAggregates)} · dead letters{' '}
        {num(projection.deadLetters)}
      </p>
      <RebuildProgress projection={projection} />
      {operator && (
        <div class="actions">
          {building(projection.generations) === undefined ? (
            <button type="button" data-testid="rebuild" onClick={() => setAction('rebuild')}>
              Rebuild
            </button>
          ) : (
            <button type="button" data-testid="cancel-rebuild" onClick={() => setAction('cancel')}>
              Cancel rebuild
            </button>
          )}
        </div>
      )}
      <ActionResult text={result} />
      <Partitions projection={projection} />
      <TrendChart
        title="Consumer lag"
        testId={`lag-chart-${projection.name}`}
        t={projection.lagHistory.t}
        values={projection.lagHistory.lag}
        format={num}
      />
      {action !== undefined && (
        <ConfirmDialog
          title={action === 'rebuild' ? `Rebuild ${projection.name}` : 'Cancel the rebuild'}
          description={
            action === 'rebuild'
              ? 'A new generation is built from the start of the topics and replaces the current one once it has caught up.'
              : 'The generation being built is dropped; the current one keeps serving.'
          }
          confirmLabel={action === 'rebuild' ? 'Rebuild' : 'Cancel rebuild'}
          reasonRequired={action === 'rebuild'}
          onConfirm={run}
          onClose={() => setAction(undefined)}
        />
      )}
    </article>
  );
}

export function ProjectionsPage(props: {
  projections: Projections | undefined;
  operator: boolean;
}) {
  if (props.projections === undefined) return <p class="loading">Waiting for the first update…</p>;
  return (
    <>
      {props.projections.projections.map((projection) => (
        <ProjectionCard key={projection.name} projection={projection} operator={props.operator} />
      ))}
    </>
  );
}
