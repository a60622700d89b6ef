// A time-series trend drawn by uPlot (canvas), resized to its container.
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export interface TrendChartProps {
  title: string;
  testId: string;
  /** Unix seconds, one per value. */
  t: number[];
  values: (number | null)[];
  /** How a value reads on the axis and in the legend (bytes, seconds, …). */
  format: (value: number) => string;
}

const HEIGHT = 180;

function options(props: TrendChartProps, width: number): uPlot.Options {
  return {
    width,
    height: HEIGHT,
    legend: { show: true },
    series: [
      {},
      {
        label: props.title,
        stroke: '#2563eb',
        fill: 'rgba(37, 99, 235, 0.08)',
        width: 2,
        value: (_: uPlot, value: number | null) => (value === null ? '—' : props.format(value)),
      },
    ],
    axes: [
      {},
      { size: 80, values: (_: uPlot, ticks: number[]) => ticks.map((tick) => props.format(tick)) },
    ],
  };
}

/** A line chart of `values` over `t`; new data is drawn in place. */
export function TrendChart(props: TrendChartProps) {
  const container = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | undefined>(undefined);
  const data: uPlot.AlignedData = [props.t, props.values];
  useEffect(() => {
    const element = container.current;
    if (element === null) return;
    plot.current = new uPlot(options(props, element.clientWidth || 600), data, element);
    const observer = new ResizeObserver(() =>
      plot.current?.setSize({ width: element.clientWidth, height: HEIGHT }),
    );
    observer.observe(element);
    return () => {
      observer.disconnect();
      plot.current?.destroy();
      plot.current = undefined;
    };
  }, []);
  useEffect(() => plot.current?.setData(data), [props.t, props.values]);
  return (
    <figure class="chart">
      <figcaption>{props.title}</figcaption>
      <div ref={container} data-testid={props.testId} />
    </figure>
  );
}
