/**
 * The doctor's output. Plain text: a table per host (✓ or ✗, the check id, what was found) with
 * the one-line fix under each ✗, then a summary line. JSON: the documented shape
 * `{"hosts":[{"name","ok","checks":[{"id","ok","detail","hint"}]}]}` (hint is null for a ✓).
 * Colour comes from the caller's `style`, which is node:util styleText on a TTY and the
 * identity otherwise.
 */
import type { styleText } from 'node:util';
import type { DoctorReport, HostReport } from './types.ts';

export type StyleFormat = Parameters<typeof styleText>[0];
export type Style = (format: StyleFormat, text: string) => string;

const plain: Style = (_format, text) => text;

export function renderPlain(report: DoctorReport, style: Style = plain): string {
  const width = Math.max(0, ...report.hosts.flatMap((host) => host.checks.map((c) => c.id.length)));
  const blocks = report.hosts.map((host) => renderHost(host, width, style));
  return `${blocks.join('\n')}\n${summary(report, style)}\n`;
}

function renderHost(host: HostReport, width: number, style: Style): string {
  const roles = host.roles.length === 0 ? 'no roles' : host.roles.join(', ');
  const lines = [`${style('bold', host.name)}  ${host.address}  ${style('dim', roles)}`];
  // Under the detail column: "  ✓ " + id + two spaces.
  const indent = ' '.repeat(width + 6);
  for (const check of host.checks) {
    const mark = check.ok ? style('green', '✓') : style('red', '✗');
    lines.push(`  ${mark} ${check.id.padEnd(width)}  ${check.detail}`);
    if (!check.ok && check.hint !== undefined) {
      lines.push(`${indent}${style('yellow', 'fix:')} ${check.hint}`);
    }
  }
  return lines.join('\n') + '\n';
}

function summary(report: DoctorReport, style: Style): string {
  const count = report.hosts.length;
  const noun = count === 1 ? 'host' : 'hosts';
  if (report.ok) return style('green', `all ${count} ${noun} ok`);
  const failing = report.hosts.filter((host) => !host.ok).map((host) => host.name);
  const verb = failing.length === 1 ? 'has' : 'have';
  return style(
    'red',
    `${failing.length} of ${count} ${noun} ${verb} problems: ${failing.join(', ')}`,
  );
}

export interface JsonReport {
  readonly hosts: readonly {
    readonly name: string;
    readonly ok: boolean;
    readonly checks: readonly {
      readonly id: string;
      readonly ok: boolean;
      readonly detail: string;
      readonly hint: string | null;
    }[];
  }[];
}

export function toJson(report: DoctorReport): JsonReport {
  return {
    hosts: report.hosts.map((host) => ({
      name: host.name,
      ok: host.ok,
      checks: host.checks.map((check) => ({
        id: check.id,
        ok: check.ok,
        detail: check.detail,
        hint: check.hint ?? null,
      })),
    })),
  };
}
