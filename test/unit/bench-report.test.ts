import { describe, expect, it } from 'vitest';
import { mermaidBars, renderReport, textBar, textChart } from '../../bench/report.ts';
import { validResults } from './bench-fixtures.ts';

describe('bench report', () => {
  it('draws bars in eighths of a cell, proportional to the largest value', () => {
    expect(textBar(10, 10, 4)).toBe('████');
    expect(textBar(5, 10, 4)).toBe('██');
    expect(textBar(1, 16, 2)).toBe('▏');
    expect(textBar(0, 10, 4)).toBe('');
    expect(textBar(3, 0, 4)).toBe('');
  });

  it('shows a missing value as a dash in the text chart', () => {
    const chart = textChart([{ label: 'a', value: 2 }, { label: 'bbb', value: null }], 'ms');
    expect(chart).toContain('a   │' + '█'.repeat(40) + ' 2 ms');
    expect(chart).toContain('bbb │ —');
  });

  it('renders a mermaid bar chart with quoted labels', () => {
    const chart = mermaidBars('T', 'ms', [{ label: 'p50', value: 3 }, { label: 'max', value: null }]);
    expect(chart).toContain('x-axis ["p50", "max"]');
    expect(chart).toContain('bar [3, 0]');
  });

  it('puts every measured number in the report', () => {
    const r = validResults();
    const md = renderReport(r);
    expect(md).toContain('Test CPU @ 2.0GHz, 2 cores, 23.4 GB, Linux 6.8.0-test');
    expect(md).toContain('| new pod bound to its node → new tcpdump verified in its netns | 5 | 310.2 | 400 | 420.5 | 420.5 |');
    expect(md).toContain('| 2000 | 6000 | 5990 | 6000 | 10 | 0 | 0.9983 |');
    expect(md).toContain('| all TargetResolved=True | 2200 ms |');
    expect(md).toContain('| 10 | 99 | 3.5 | 10 | 80 |');
    expect(md).not.toContain('Phases that failed');
    expect(renderReport({ ...r, errors: ['scale: boom'] })).toContain('- scale: boom');
  });
});
