import type { Readable, Writable } from 'node:stream';

/** What a command may touch of the outside world; tests pass their own streams. */
export interface CommandContext {
  readonly stdin: Readable;
  readonly stdout: Writable;
  readonly stderr: Writable;
  readonly env: NodeJS.ProcessEnv;
  /** The command's own arguments, after its name (and subcommand name) were taken off. */
  readonly argv: readonly string[];
  readonly debug: boolean;
}

/** A command returns its exit code; it throws FirnError for failures a user can reach. */
export type CommandRun = (ctx: CommandContext) => Promise<number>;

export interface CommandSpec {
  readonly name: string;
  readonly summary: string;
  /** Loaded only when this command runs, so `firn --help` stays fast. */
  readonly load: () => Promise<{ readonly run: CommandRun }>;
}
