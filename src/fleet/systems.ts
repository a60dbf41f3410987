/**
 * Nix system names (`x86_64-linux`, `aarch64-linux`, `aarch64-darwin`, …): a CPU, a dash, an
 * OS. A wrong one in `systems` is the classic remote-build failure that Nix reports only at build
 * time ("a 'aarch64-linux' is required to build …"), so the inventory rejects it up front and
 * says what to write: `arm64-linux` → `aarch64-linux`, `aarch64` → `aarch64-linux`.
 */

/** CPUs Nix knows by these names (lib.systems.parse.cpuTypes), plus the x86_64 levels. */
const CPUS = new Set([
  'x86_64',
  'x86_64-v1',
  'x86_64-v2',
  'x86_64-v3',
  'x86_64-v4',
  'i686',
  'i586',
  'i486',
  'i386',
  'aarch64',
  'aarch64_be',
  'armv5tel',
  'armv6l',
  'armv7l',
  'armv7a',
  'armv8a',
  'riscv32',
  'riscv64',
  'powerpc',
  'powerpc64',
  'powerpc64le',
  'mips',
  'mipsel',
  'mips64',
  'mips64el',
  's390',
  's390x',
  'loongarch64',
  'm68k',
  'microblaze',
  'sparc64',
  'wasm32',
  'wasm64',
  'avr',
  'or1k',
]);

const KERNELS = new Set([
  'linux',
  'darwin',
  'freebsd',
  'netbsd',
  'openbsd',
  'cygwin',
  'windows',
  'none',
  'wasi',
  'redox',
  'genode',
  'illumos',
  'solaris',
]);

/** What people write for a CPU or OS, and Nix's own name for it. */
const ALIASES: Readonly<Record<string, string>> = {
  arm64: 'aarch64',
  armv8: 'aarch64',
  amd64: 'x86_64',
  x64: 'x86_64',
  'x86-64': 'x86_64',
  x86: 'i686',
  armhf: 'armv7l',
  arm: 'armv7l',
  ppc64le: 'powerpc64le',
  ppc64: 'powerpc64',
  riscv: 'riscv64',
  macos: 'darwin',
  osx: 'darwin',
  mac: 'darwin',
  apple: 'darwin',
  win32: 'windows',
  gnu: 'linux',
};

const EXAMPLES = '"x86_64-linux", "aarch64-linux" or "aarch64-darwin"';

/** Why `system` is not a Nix system name, ending in what to write instead; undefined if it is one. */
export function systemProblem(system: string): string | undefined {
  if (isNixSystem(system)) return undefined;
  const quoted = JSON.stringify(system);
  const suggestion = suggestSystem(system);
  if (suggestion !== undefined) {
    return `${quoted} is not a Nix system name; write ${JSON.stringify(suggestion)}`;
  }
  const words = systemWords(system);
  if (words.length === 1 && isCpu(words[0] ?? '')) {
    const cpu = canonical(words[0] ?? '');
    return `${quoted} names only the CPU; add the OS, e.g. "${cpu}-linux" or "${cpu}-darwin"`;
  }
  if (words.length === 1 && isKernel(words[0] ?? '')) {
    const kernel = canonical(words[0] ?? '');
    return `${quoted} names only the OS; add the CPU, e.g. "x86_64-${kernel}" or "aarch64-${kernel}"`;
  }
  return `${quoted} is not a Nix system name (CPU-OS); write e.g. ${EXAMPLES}`;
}

export function isNixSystem(system: string): boolean {
  const dash = system.lastIndexOf('-');
  if (dash <= 0) return false;
  return CPUS.has(system.slice(0, dash)) && KERNELS.has(system.slice(dash + 1));
}

/** A system spelt another way (`arm64-linux`, `linux-aarch64`, `aarch64-unknown-linux-gnu`). */
function suggestSystem(system: string): string | undefined {
  const words = systemWords(system);
  const cpu = words.map(canonical).find((word) => CPUS.has(word));
  const kernel = words.map(canonical).find((word) => KERNELS.has(word));
  if (cpu === undefined || kernel === undefined) return undefined;
  const candidate = `${cpu}-${kernel}`;
  return candidate === system ? undefined : candidate;
}

function systemWords(system: string): string[] {
  const lower = system.trim().toLowerCase();
  // Keep x86_64-v3 and x86-64 whole before splitting at dashes.
  const levels = lower.replace(/x86-64/g, 'x86_64').replace(/(x86_64)-(v[1-4])/g, '$1+$2');
  return levels
    .split(/[-\s/]+/)
    .filter((word) => word !== '' && word !== 'unknown' && word !== 'pc')
    .map((word) => word.replace('+', '-'));
}

function canonical(word: string): string {
  return ALIASES[word] ?? word;
}

function isCpu(word: string): boolean {
  return CPUS.has(canonical(word));
}

function isKernel(word: string): boolean {
  return KERNELS.has(canonical(word));
}
