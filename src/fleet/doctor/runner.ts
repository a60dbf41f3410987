/**
 * Runs the doctor's checks on every host at once. Per host: one SSH connection (the `ssh`
 * check); if it comes up, every check that applies to the host's roles — the same rules
 * `firn gen` writes from (src/fleet/gen-plan.ts) — runs over it, a few sessions at a time.
 * A host that cannot be reached fails within the connect deadline and holds up no one; the
 * round trip's test path is uploaded once for all hosts, when the first one is connected.
 *
 * API: runDoctor(fleet, hosts, options) → DoctorReport (hosts in the order given).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { planHost } from '../gen-plan.ts';
import type { Fleet, Host } from '../inventory.ts';
import {
  checkCacheKey,
  checkCacheReachable,
  checkPushToken,
  checkSubstituter,
} from './cache-checks.ts';
import { settingsLoader, type CheckContext } from './context.ts';
import {
  checkDisk,
  checkFeatures,
  checkNegativeTtl,
  checkNixVersion,
  checkStoreWritable,
  checkSystems,
  checkTrustedUser,
} from './nix-checks.ts';
import { checkRoundTrip, pushProbe, type PushOutcome } from './round-trip.ts';
import { openSession, type SshSession } from './ssh-session.ts';
import { inCheckOrder, type CheckResult, type DoctorReport, type HostReport } from './types.ts';

export interface DoctorOptions {
  readonly env: NodeJS.ProcessEnv;
  /** The disk check fails below this many free bytes on the store's file system. */
  readonly minFreeBytes: number;
  /** Push a test path and substitute it on every host (needs a push token here). */
  readonly roundTrip: boolean;
  /** Push token for the round trip; else FIRN_TOKEN, else the netrc file here. */
  readonly tokenFile?: string | undefined;
  readonly connectTimeoutMs?: number;
}

export const DEFAULT_MIN_FREE_BYTES = 1024 ** 3;
/** Sessions one host runs at once; sshd allows 10 per connection by default. */
const SESSIONS_PER_HOST = 4;

export async function runDoctor(
  fleet: Fleet,
  hosts: readonly Host[],
  options: DoctorOptions,
): Promise<DoctorReport> {
  const dir = await mkdtemp(join(tmpdir(), 'firn-doctor-'));
  try {
    const cacheUrl = fleet.cache?.url;
    let pushed: Promise<PushOutcome> | undefined;
    // Started on first use, so a run in which no host gets that far pushes nothing.
    const probe = (url: string): Promise<PushOutcome> =>
      (pushed ??= pushProbe({ cacheUrl: url, env: options.env, tokenFile: options.tokenFile }));
    const reports = await Promise.all(
      hosts.map((host, slot) => checkHost(fleet, host, { ...options, dir, slot, probe, cacheUrl })),
    );
    return { ok: reports.every((report) => report.ok), hosts: reports };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

interface HostRun extends DoctorOptions {
  readonly dir: string;
  readonly slot: number;
  readonly cacheUrl: string | undefined;
  readonly probe: (cacheUrl: string) => Promise<PushOutcome>;
}

async function checkHost(fleet: Fleet, host: Host, run: HostRun): Promise<HostReport> {
  const started = Date.now();
  const opened = await openSession(host, {
    dir: run.dir,
    slot: run.slot,
    env: run.env,
    ...(run.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: run.connectTimeoutMs }),
  });
  const results: CheckResult[] = [opened.check];
  if (opened.session !== undefined) {
    const session = limitSessions(opened.session, SESSIONS_PER_HOST);
    try {
      results.push(...(await hostChecks(fleet, host, session, run)));
    } finally {
      await session.close();
    }
  }
  const checks = inCheckOrder(results);
  return {
    name: host.name,
    address: host.address,
    roles: host.roles,
    ok: checks.every((check) => check.ok),
    checks,
    ms: Date.now() - started,
  };
}

/**
 * Every check that applies to this host: `nix-version` first and alone, then the rest at once.
 * Nix 2.8 on a store nobody has used yet races with itself when several nix commands start
 * together (creating its profiles symlink: "File exists"; its schema: "database is busy"); the
 * first command alone sets the store up, as on a fresh board's first `firn doctor`.
 */
async function hostChecks(
  fleet: Fleet,
  host: Host,
  session: SshSession,
  run: HostRun,
): Promise<CheckResult[]> {
  const plan = planHost(fleet, host);
  const ctx: CheckContext = { fleet, host, plan, session, nixSettings: settingsLoader(session) };
  const nixVersion = await checkNixVersion(ctx);
  const storeWritable = checkStoreWritable(ctx);
  const checks: Promise<CheckResult>[] = [Promise.resolve(nixVersion), storeWritable];
  if (host.systems.length > 0) checks.push(checkSystems(ctx));
  if (host.features.length + host.mandatoryFeatures.length > 0) checks.push(checkFeatures(ctx));
  if (plan.builds) checks.push(checkTrustedUser(ctx));
  const cacheUrl = run.cacheUrl;
  if (cacheUrl !== undefined) {
    const cacheChecks = [
      checkCacheReachable(ctx, cacheUrl),
      checkCacheKey(ctx),
      checkSubstituter(ctx, cacheUrl),
    ];
    checks.push(...cacheChecks);
    if (plan.pushes) checks.push(checkPushToken(ctx, cacheUrl));
    if (run.roundTrip) {
      // After the store probe too: both write to the host's store.
      checks.push(
        checkRoundTrip(ctx, run.probe(cacheUrl), Promise.all([...cacheChecks, storeWritable])),
      );
    }
  }
  checks.push(checkNegativeTtl(ctx), checkDisk(ctx, run.minFreeBytes));
  return Promise.all(checks);
}

/** At most `limit` commands of one host at a time; the rest wait their turn. */
function limitSessions(session: SshSession, limit: number): SshSession {
  let active = 0;
  const waiting: (() => void)[] = [];
  return {
    destination: session.destination,
    async run(command, options) {
      // A finishing command hands its slot straight to the next in line.
      if (active >= limit) await new Promise<void>((resolve) => waiting.push(resolve));
      else active++;
      try {
        return await session.run(command, options);
      } finally {
        const next = waiting.shift();
        if (next === undefined) active--;
        else next();
      }
    },
    close: () => session.close(),
  };
}
