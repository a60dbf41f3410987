/**
 * Build durations learned per derivation name, kept in SQLite, so the scheduler can put the
 * longest remaining path first. A name is the derivation's `name` with a trailing version
 * removed (`linux-6.1.55` and `linux-6.1.56` share a history), per system. Each build moves
 * the estimate halfway to what was measured (normalised by the builder's speed factor): recent
 * builds count most, and one odd build does not throw the estimate off.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { fromFsError } from '../errors.ts';

/** For a derivation never built before: long enough that unknown work is not put last. */
export const DEFAULT_DURATION_S = 10;

export interface DurationModel {
  /** Expected seconds on a builder with speed factor 1. */
  estimate(name: string, system: string): number;
  record(name: string, system: string, seconds: number): void;
}

/** `linux-6.1.55` → `linux`; `hello-2.12` → `hello`; names without a version stay. */
export function durationKey(name: string): string {
  const match = /^(.+?)-[0-9][^-]*(?:-.*)?$/.exec(name);
  return match?.[1] ?? name;
}

export class SqliteDurations implements DurationModel {
  readonly #db: DatabaseSync;
  readonly #defaultSeconds: number;

  constructor(file: string, options: { readonly defaultSeconds?: number } = {}) {
    this.#defaultSeconds = options.defaultSeconds ?? DEFAULT_DURATION_S;
    try {
      if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
      this.#db = new DatabaseSync(file);
    } catch (error) {
      throw fromFsError(error, file, 'open the build duration history');
    }
    this.#db.exec('PRAGMA busy_timeout = 5000');
    this.#db.exec(
      `CREATE TABLE IF NOT EXISTS durations (
         name TEXT NOT NULL, system TEXT NOT NULL, seconds REAL NOT NULL, builds INTEGER NOT NULL,
         PRIMARY KEY (name, system))`,
    );
  }

  estimate(name: string, system: string): number {
    const row = this.#db
      .prepare('SELECT seconds FROM durations WHERE name = ? AND system = ?')
      .get(durationKey(name), system);
    const seconds = row?.seconds;
    return typeof seconds === 'number' ? seconds : this.#defaultSeconds;
  }

  record(name: string, system: string, seconds: number): void {
    if (!Number.isFinite(seconds) || seconds < 0) return;
    this.#db
      .prepare(
        `INSERT INTO durations (name, system, seconds, builds) VALUES (?, ?, ?, 1)
         ON CONFLICT (name, system) DO UPDATE
           SET seconds = (seconds + excluded.seconds) / 2, builds = builds + 1`,
      )
      .run(durationKey(name), system, seconds);
  }

  close(): void {
    this.#db.close();
  }
}

/** In memory, for tests and `--no-history`. */
export class MemoryDurations implements DurationModel {
  readonly #known = new Map<string, number>();
  readonly #defaultSeconds: number;

  constructor(known: Readonly<Record<string, number>> = {}, defaultSeconds = DEFAULT_DURATION_S) {
    for (const [name, seconds] of Object.entries(known))
      this.#known.set(durationKey(name), seconds);
    this.#defaultSeconds = defaultSeconds;
  }

  estimate(name: string): number {
    return this.#known.get(durationKey(name)) ?? this.#defaultSeconds;
  }

  record(name: string, _system: string, seconds: number): void {
    const old = this.#known.get(durationKey(name));
    this.#known.set(durationKey(name), old === undefined ? seconds : (old + seconds) / 2);
  }
}
