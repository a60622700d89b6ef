// Dead letters & parked: groups under a filter, the record behind a row, redrive and skip.
import { useCallback, useEffect, useState } from 'preact/hooks';
import { api, query, type Parked, type ParkedGroup, type ParkedItem } from '../api.js';
import { num, time } from '../format.js';
import { ActionResult, ConfirmDialog, Facts } from '../ui.js';

interface Filter {
  projection: string;
  aggregateType: string;
  aggregateId: string;
  errorClass: string;
}

type Pending =
  | { kind: 'redrive'; group: ParkedGroup }
  | { kind: 'matching' }
  | { kind: 'skip'; item: ParkedItem };

const REFRESH_MS = 3000;
const EMPTY: Filter = { projection: '', aggregateType: '', aggregateId: '', errorClass: '' };

// The fields keep what is typed while the list refreshes underneath; Enter or leaving a field
// applies them.
function FilterForm({ onApply }: { onApply: (f: Filter) => void }) {
  const [draft, setDraft] = useState<Filter>(EMPTY);
  const field = (name: keyof Filter, label: string) => (
    <label>
      {label}
      <input
        data-testid={`filter-${name}`}
        value={draft[name]}
        onInput={(event) => setDraft({ ...draft, [name]: event.currentTarget.value })}
        onChange={(event) => onApply({ ...draft, [name]: event.currentTarget.value })}
      />
    </label>
  );
  return (
    <form class="filter" onSubmit={(event) => event.preventDefault()}>
      {field('projection', 'Projection')}
      {field('aggregateType', 'Aggregate type')}
      {field('aggregateId', 'Aggregate id')}
      {field('errorClass', 'Error')}
    </form>
  );
}

function Record({ item, operator, onSkip }: RecordProps) {
  return (
    <article class="record" data-testid="record">
      <h3>
        {item.topic}/{item.partition}@{item.offset} — {item.eventType ?? 'unknown type'} v
        {item.version ?? '?'}
      </h3>
      <Facts
        items={[
          ['key', item.key ?? '—', 'record-key'],
          [
            'error',
            item.message === item.errorClass
              ? item.errorClass
              : `${item.errorClass}: ${item.message}`,
            'record-error',
          ],
          ['attempts', item.attempts, 'record-attempts'],
          ['parked at', time(item.parkedAt), 'record-parked-at'],
        ]}
      />
      <h4>Headers</h4>
      <pre data-testid="record-headers">{JSON.stringify(item.headers, null, 2)}</pre>
      <h4>Payload</h4>
      <pre data-testid="record-payload">
        {item.masked ? '(masked for your role)' : JSON.stringify(item.payload, null, 2)}
      </pre>
      {operator && (
        <button type="button" data-testid="skip" onClick={() => onSkip(item)}>
          Skip this record
        </button>
      )}
    </article>
  );
}

interface RecordProps {
  item: ParkedItem;
  operator: boolean;
  onSkip: (item: ParkedItem) => void;
}

function sameAggregate(item: ParkedItem, group: ParkedGroup): boolean {
  return (
    item.projection === group.projection &&
    item.aggregateType === group.aggregateType &&
    item.aggregateId === group.aggregateId
  );
}

function describe(pending: Pending, filter: Filter): string {
  if (pending.kind === 'redrive') {
    const { group } = pending;
    return `Redrive ${group.aggregateType} ${group.aggregateId} in ${group.projection}: its ${group.count} parked record(s) are applied again, in order.`;
  }
  if (pending.kind === 'matching') {
    return `Redrive every aggregate parked in ${filter.projection} matching aggregate type "${filter.aggregateType || 'any'}" and error "${filter.errorClass || 'any'}".`;
  }
  const { item } = pending;
  return `Skip ${item.topic}/${item.partition}@${item.offset} in ${item.projection}: it is never applied, and the aggregate's later records proceed.`;
}

async function perform(pending: Pending, filter: Filter, reason: string): Promise<string> {
  if (pending.kind === 'redrive') {
    const { projection, aggregateType, aggregateId } = pending.group;
    const body = { projection, aggregateType, aggregateId, reason };
    const answer = await api<{ applied: number; parked: number }>('/parked/redrive', 'POST', body);
    return `Redrive: ${answer.applied} applied, ${answer.parked} still parked.`;
  }
  if (pending.kind === 'matching') {
    const body = {
      projection: filter.projection,
      ...(filter.aggregateType === '' ? {} : { aggregateType: filter.aggregateType }),
      ...(filter.errorClass === '' ? {} : { errorClass: filter.errorClass }),
      reason,
    };
    const answer = await api<{ aggregates: number; applied: number; parked: number }>(
      '/parked/redrive-matching',
      'POST',
      body,
    );
    return `Redrive of ${answer.aggregates} aggregate(s): ${answer.applied} applied, ${answer.parked} still parked.`;
  }
  const { projection, topic, partition, offset } = pending.item;
  const answer = await api('/parked/skip', 'POST', {
    projection,
    topic,
    partition,
    offset,
    reason,
  });
  return `Skipped: ${JSON.stringify(answer)}`;
}

function useParked(filter: Filter): { parked: Parked | undefined; reload: () => void } {
  const [parked, setParked] = useState<Parked | undefined>(undefined);
  const reload = useCallback(() => {
    api<Parked>(`/parked${query({ ...filter, limit: '200' })}`).then(setParked, () => undefined);
  }, [filter]);
  useEffect(() => {
    reload();
    const timer = setInterval(reload, REFRESH_MS);
    return () => clearInterval(timer);
  }, [reload]);
  return { parked, reload };
}

export function ParkedPage({ operator }: { operator: boolean }) {
  const [filter, setFilter] = useState<Filter>(EMPTY);
  const [open, setOpen] = useState<ParkedGroup | undefined>(undefined);
  const [pending, setPending] = useState<Pending | undefined>(undefined);
  const [result, setResult] = useState<string | undefined>(undefined);
  const { parked, reload } = useParked(filter);
  const confirm = async (reason: string): Promise<void> => {
    if (pending === undefined) return;
    setResult(await perform(pending, filter, reason));
    reload();
  };
  return (
    <>
      <FilterForm onApply={setFilter} />
      {operator && (
        <button
          type="button"
          data-testid="redrive-matching"
          disabled={filter.projection === ''}
          title={filter.projection === '' ? 'Filter on a projection first' : undefined}
          onClick={() => setPending({ kind: 'matching' })}
        >
          Redrive all matching
        </button>
      )}
      <ActionResult text={result} />
      {parked === undefined ? (
        <p class="loading">Loading…</p>
      ) : parked.groups.length === 0 ? (
        <p data-testid="parked-empty">Nothing parked or dead-lettered.</p>
      ) : (
        <table data-testid="parked-groups">
          <thead>
            <tr>
              <th>projection</th>
              <th>aggregate</th>
              <th>error</th>
              <th>records</th>
              <th>first parked</th>
              {operator && <th>action</th>}
            </tr>
          </thead>
          <tbody>
            {parked.groups.map((group) => (
              <tr
                key={`${group.projection}-${group.aggregateType}-${group.aggregateId}-${group.errorClass}`}
                data-testid="parked-group"
                data-aggregate-id={group.aggregateId ?? ''}
                class="clickable"
                onClick={() => setOpen(group)}
              >
                <td>{group.projection}</td>
                <td>
                  {group.aggregateType === null
                    ? 'undecodable record'
                    : `${group.aggregateType} ${group.aggregateId ?? ''}`}
                </td>
                <td>{group.errorClass}</td>
                <td>{num(group.count)}</td>
                <td>{time(group.firstParkedAt)}</td>
                {operator && (
                  <td>
                    {/* An undecodable record has no aggregate to redrive: open it and skip it. */}
                    <button
                      type="button"
                      disabled={group.aggregateType === null || group.aggregateId === null}
                      data-testid="redrive"
                      onClick={(event) => {
                        event.stopPropagation();
                        setPending({ kind: 'redrive', group });
                      }}
                    >
                      Redrive
                    </button>
                  </td>
                )}
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {open !== undefined &&
        parked?.items
          .filter((item) => sameAggregate(item, open))
          .map((item) => (
            <Record
              key={`${item.topic}-${item.partition}-${item.offset}`}
              item={item}
              operator={operator}
              onSkip={(target) => setPending({ kind: 'skip', item: target })}
            />
          ))}
      {pending !== undefined && (
        <ConfirmDialog
          title={pending.kind === 'skip' ? 'Skip a record' : 'Redrive'}
          description={describe(pending, filter)}
          confirmLabel={pending.kind === 'skip' ? 'Skip' : 'Redrive'}
          reasonRequired={pending.kind === 'skip'}
          onConfirm={confirm}
          onClose={() => setPending(undefined)}
        />
      )}
    </>
  );
}
