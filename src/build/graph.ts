/**
 * The build graph: the `.drv` files reachable from the requested derivations, read with our own
 * parser (no `nix show-derivation` per file), one node per derivation path. Identical
 * derivations requested several times (the same kernel for three boards) have the same path,
 * so they are one node and are built once.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fromFsError } from '../errors.ts';
import { parseDerivation, type Derivation } from '../nix/derivation.ts';
import { parseStorePath } from '../nix/store-path.ts';

export interface DrvNode {
  readonly drvPath: string;
  readonly drv: Derivation;
  /** The derivation's `name` (what durations are learned by). */
  readonly name: string;
  readonly system: string;
  /** From `requiredSystemFeatures`, sorted and unique. */
  readonly requiredFeatures: readonly string[];
  /** output name → store path ('' for floating content-addressed outputs). */
  readonly outputs: ReadonlyMap<string, string>;
  /** input drv path → the output names used. */
  readonly inputDrvs: ReadonlyMap<string, readonly string[]>;
  readonly inputSrcs: readonly string[];
}

export interface BuildGraph {
  /** Requested derivations, deduplicated, in the order first given. */
  readonly roots: readonly string[];
  readonly nodes: ReadonlyMap<string, DrvNode>;
}

export interface ReadGraphOptions {
  /** Root of a chroot store (`--store DIR`): drv files are read from DIR/nix/store/…. */
  readonly storeRoot?: string | undefined;
}

/** Reads every `.drv` reachable from `roots`. */
export async function readGraph(
  roots: readonly string[],
  options: ReadGraphOptions = {},
): Promise<BuildGraph> {
  const uniqueRoots = [...new Set(roots)];
  const nodes = new Map<string, DrvNode>();
  let frontier = uniqueRoots;
  while (frontier.length > 0) {
    const read = await Promise.all(frontier.map((path) => readNode(path, options.storeRoot)));
    const next = new Set<string>();
    for (const node of read) nodes.set(node.drvPath, node);
    for (const node of read) {
      for (const input of node.inputDrvs.keys()) if (!nodes.has(input)) next.add(input);
    }
    frontier = [...next];
  }
  return { roots: uniqueRoots, nodes };
}

async function readNode(drvPath: string, storeRoot: string | undefined): Promise<DrvNode> {
  const file = storeRoot === undefined ? drvPath : join(storeRoot, drvPath);
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (error) {
    throw fromFsError(error, file, 'read the derivation');
  }
  return nodeOf(drvPath, parseDerivation(bytes));
}

export function nodeOf(drvPath: string, drv: Derivation): DrvNode {
  const structured = structuredAttrs(drv);
  const features =
    structured === undefined
      ? (drv.env.get('requiredSystemFeatures') ?? '').split(/\s+/).filter(Boolean)
      : stringList(structured.requiredSystemFeatures);
  const structuredName = structured?.name;
  return {
    drvPath,
    drv,
    name:
      drv.env.get('name') ??
      (typeof structuredName === 'string' ? structuredName : undefined) ??
      parseStorePath(drvPath).name.replace(/\.drv$/, ''),
    system: drv.system,
    requiredFeatures: [...new Set(features)].sort(),
    outputs: new Map([...drv.outputs].map(([name, output]) => [name, output.path])),
    inputDrvs: drv.inputDrvs,
    inputSrcs: drv.inputSrcs,
  };
}

/**
 * A `__structuredAttrs` derivation keeps its attributes as JSON in the `__json` variable
 * (`requiredSystemFeatures` is a list there, and `name` is not in the plain env); a value that
 * is not a JSON object reads as none.
 */
function structuredAttrs(drv: Derivation): Record<string, unknown> | undefined {
  const json = drv.env.get('__json');
  if (json === undefined) return undefined;
  try {
    const parsed: unknown = JSON.parse(json);
    return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)
      ? (parsed as Record<string, unknown>)
      : {};
  } catch {
    return {};
  }
}

function stringList(value: unknown): string[] {
  return Array.isArray(value)
    ? value.filter((item): item is string => typeof item === 'string' && item !== '')
    : [];
}

/** drv path → the drv paths that take it as an input, within `within`. */
export function dependentsOf(
  graph: BuildGraph,
  within: ReadonlySet<string>,
): Map<string, string[]> {
  const dependents = new Map<string, string[]>();
  for (const path of within) dependents.set(path, []);
  for (const path of within) {
    const node = graph.nodes.get(path);
    if (node === undefined) continue;
    for (const input of node.inputDrvs.keys()) dependents.get(input)?.push(path);
  }
  return dependents;
}

/** The store paths a node needs on its builder: its sources and its inputs' used outputs. */
export function inputPaths(graph: BuildGraph, node: DrvNode): string[] {
  const paths = new Set(node.inputSrcs);
  for (const [input, names] of node.inputDrvs) {
    const inputNode = graph.nodes.get(input);
    for (const name of names) {
      const path = inputNode?.outputs.get(name);
      if (path !== undefined && path !== '') paths.add(path);
    }
  }
  return [...paths].sort();
}
