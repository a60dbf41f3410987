/**
 * The vocabulary of the NAR parser: the states of its state machine, with what each expects
 * (for messages), and the words of the grammar, pre-encoded for a quick compare. Plain tables,
 * kept apart from `nar-parser.ts` so that file holds only the transitions; it aliases them to
 * module-local constants, which V8 folds on the hot path where it would not fold an import.
 */
import { displayNarPath, encodeStrings } from './nar-format.ts';
import type { Tag } from './nar-lexer.ts';

/** Where the grammar stands; each state names the token it expects next. */
export const NAR_STATES = {
  magic: 0,
  open: 1, // "(" of a node
  typeTag: 2, // "type"
  type: 3, // "regular" | "symlink" | "directory"
  executableOrContents: 4,
  executableValue: 5, // ""
  contentsTag: 6,
  contentsLength: 7,
  contents: 8,
  contentsPadding: 9,
  close: 10, // ")" of a regular or symlink node
  targetTag: 11,
  target: 12,
  entryOrClose: 13, // "entry" | ")" in a directory
  entryOpen: 14,
  nameTag: 15,
  name: 16,
  nodeTag: 17,
  entryClose: 18,
  done: 19,
} as const;
export type State = (typeof NAR_STATES)[keyof typeof NAR_STATES];
const S = NAR_STATES;

/** The tag `text`, as NarLexer.match() and tokenIs() compare it. */
function tag(text: string): Tag {
  return { text: Buffer.from(text, 'latin1'), token: encodeStrings(text) };
}
export const NAR_TAGS = {
  open: tag('('),
  close: tag(')'),
  type: tag('type'),
  regular: tag('regular'),
  symlink: tag('symlink'),
  directory: tag('directory'),
  executable: tag('executable'),
  contents: tag('contents'),
  target: tag('target'),
  entry: tag('entry'),
  name: tag('name'),
  node: tag('node'),
  empty: tag(''),
} as const;

/** What `state` expects next, as a message fragment. */
export function expectedIn(state: State): string {
  switch (state) {
    case S.magic:
      return '"nix-archive-1"';
    case S.open:
    case S.entryOpen:
      return '"("';
    case S.typeTag:
      return '"type"';
    case S.type:
      return '"regular", "symlink" or "directory"';
    case S.executableOrContents:
      return '"executable" or "contents"';
    case S.executableValue:
      return '"" (the executable marker)';
    case S.contentsTag:
      return '"contents"';
    case S.targetTag:
      return '"target"';
    case S.entryOrClose:
      return '"entry" or ")"';
    case S.nameTag:
      return '"name"';
    case S.nodeTag:
      return '"node"';
    default:
      return '")"';
  }
}

/**
 * The node being parsed in `state`, for messages: in the states that read a directory's
 * entries that is the directory (`dir`), else the current node (`node`).
 */
export function describeNode(state: State, dir: Buffer, node: Buffer): string {
  if (state === S.magic) return 'the NAR header';
  const inDirectory =
    state === S.entryOrClose ||
    state === S.entryOpen ||
    state === S.nameTag ||
    state === S.name ||
    state === S.entryClose;
  return `the node at ${displayNarPath(inDirectory ? dir : node)}`;
}
