/** The markdown a benchmark prints: a results table and the facts needed to reproduce it. */
import { cpus, availableParallelism, totalmem, release } from 'node:os';
import { firstLine } from './procs.ts';

export interface Row {
  readonly metric: string;
  readonly firn: string;
  readonly reference: string;
  readonly ratio: string;
  readonly goal: string;
  readonly met: string;
}

export function table(rows: readonly Row[]): string {
  const header =
    '| metric | firn | reference | ratio | goal | met? |\n| --- | ---: | ---: | ---: | --- | --- |';
  const lines = rows.map(
    (row) =>
      `| ${row.metric} | ${row.firn} | ${row.reference} | ${row.ratio} | ${row.goal} | ${row.met} |`,
  );
  return [header, ...lines].join('\n');
}

/** `firn / reference` to two decimals, with a ×. */
export function ratio(firn: number, reference: number): string {
  return reference === 0 || !Number.isFinite(firn / reference)
    ? '—'
    : `${(firn / reference).toFixed(2)}×`;
}

export function yesNo(met: boolean): string {
  return met ? 'yes' : '**no**';
}

export function machineFacts(): string[] {
  return [
    `- CPU: ${cpus()[0]?.model ?? 'unknown'}, nproc ${availableParallelism()}`,
    `- memory: ${(totalmem() / 1024 ** 3).toFixed(1)} GiB, kernel ${release()}`,
    `- node ${process.version}`,
    `- ${firstLine('nix', ['--version'])}`,
    `- ${firstLine('nginx', ['-v'])}`,
    `- ${firstLine('wrk', ['-v'])}`,
    `- ${firstLine('curl', ['--version']).split(' (')[0] ?? ''}`,
  ];
}
