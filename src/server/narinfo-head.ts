/**
 * Recognises, in bytes read off a socket (as a latin1 string), the one request head the raw
 * narinfo path answers itself: `GET|HEAD /<hash>.narinfo HTTP/1.1`, CRLF line endings, header
 * lines of a token name, a colon and printable ASCII, a Host header, and nothing that asks for a
 * body, a continue, an upgrade or a proxy's connection handling. Anything else, or anything in
 * doubt, is node:http's to parse: this only has to be right about what it accepts, because
 * node:http answers everything it declines.
 */
import { NARINFO_URL, NARINFO_URL_LENGTH, type NarinfoMethod } from './narinfo-answer.ts';

/** What the raw path needs from a head it answers; one per connection, refilled per request. */
export interface NarinfoHead {
  method: NarinfoMethod;
  url: string;
  /** `Connection: close`: answer, then end the connection. */
  close: boolean;
  /** The Authorization value (trimmed), for a private cache. */
  authorization: string | undefined;
  /** The offset just past the blank line that ends the head. */
  end: number;
}

export const HEAD_OK = 0;
/** No blank line yet: the rest of the head has not arrived (or never will). */
export const HEAD_INCOMPLETE = 1;
/** A complete head that is not one the raw path answers. */
export const HEAD_FOREIGN = 2;
export type HeadResult = typeof HEAD_OK | typeof HEAD_INCOMPLETE | typeof HEAD_FOREIGN;

/**
 * Heads longer than this go to node:http, whose own limits (16 KiB, 2000 fields) then apply
 * exactly as they would have: a client's real narinfo request is a few hundred bytes.
 */
export const MAX_HEAD_BYTES = 4096;

const REQUEST_LINE_END = ' HTTP/1.1\r\n';
/** One header line from its name to its CRLF; sticky, so it is matched in place. */
const HEADER_LINE = /[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e]*\r\n/y;

export function emptyHead(): NarinfoHead {
  return { method: 'GET', url: '', close: false, authorization: undefined, end: 0 };
}

/** Parses the head that starts at `start` of `text` into `head`. */
export function parseNarinfoHead(text: string, start: number, head: NarinfoHead): HeadResult {
  const blank = text.indexOf('\r\n\r\n', start);
  if (blank < 0) return HEAD_INCOMPLETE;
  const end = blank + 4;
  if (end - start > MAX_HEAD_BYTES) return HEAD_FOREIGN;
  let url: number;
  if (text.startsWith('GET /', start)) {
    head.method = 'GET';
    url = start + 4;
  } else if (text.startsWith('HEAD /', start)) {
    head.method = 'HEAD';
    url = start + 5;
  } else return HEAD_FOREIGN;
  if (!text.startsWith(REQUEST_LINE_END, url + NARINFO_URL_LENGTH)) return HEAD_FOREIGN;
  head.url = text.slice(url, url + NARINFO_URL_LENGTH);
  if (!NARINFO_URL.test(head.url)) return HEAD_FOREIGN;
  head.close = false;
  head.authorization = undefined;
  head.end = end;
  let hosts = 0;
  let line = url + NARINFO_URL_LENGTH + REQUEST_LINE_END.length;
  // The last field's CRLF is the first two bytes of the blank-line sequence.
  while (line < blank + 2) {
    HEADER_LINE.lastIndex = line;
    if (!HEADER_LINE.test(text)) return HEAD_FOREIGN;
    const next = HEADER_LINE.lastIndex;
    const colon = text.indexOf(':', line);
    switch (colon - line) {
      case 4:
        if (isName(text, line, 'host')) hosts++;
        break;
      case 6:
        if (isName(text, line, 'expect')) return HEAD_FOREIGN;
        break;
      case 7:
        if (isName(text, line, 'upgrade')) return HEAD_FOREIGN;
        break;
      case 10:
        if (isName(text, line, 'connection')) {
          const close = closesConnection(text.slice(colon + 1, next - 2));
          if (close === undefined) return HEAD_FOREIGN;
          head.close ||= close;
        }
        break;
      case 13:
        if (isName(text, line, 'authorization')) {
          if (head.authorization !== undefined) return HEAD_FOREIGN;
          head.authorization = text.slice(colon + 1, next - 2).trim();
        }
        break;
      case 14:
        if (isName(text, line, 'content-length')) return HEAD_FOREIGN;
        break;
      case 16:
        // llhttp treats it as Connection; rare enough to leave to node:http.
        if (isName(text, line, 'proxy-connection')) return HEAD_FOREIGN;
        break;
      case 17:
        if (isName(text, line, 'transfer-encoding')) return HEAD_FOREIGN;
        break;
    }
    line = next;
  }
  // HTTP/1.1 needs exactly one Host; node:http answers a missing one with 400.
  return hosts === 1 ? HEAD_OK : HEAD_FOREIGN;
}

/** Whether the field name at `at` is `lower` in any case (name characters are tokens). */
function isName(text: string, at: number, lower: string): boolean {
  for (let i = 0; i < lower.length; i++) {
    if ((text.charCodeAt(at + i) | 0x20) !== lower.charCodeAt(i)) return false;
  }
  return true;
}

/**
 * A Connection value's verdict, as llhttp reads the tokens: true for `close`, false to keep the
 * connection, undefined (leave it to node:http) for `upgrade` or anything not a plain token list.
 */
export function closesConnection(value: string): boolean | undefined {
  let close = false;
  for (const part of value.toLowerCase().split(',')) {
    const token = part.trim();
    if (token === 'close') close = true;
    else if (token === 'upgrade' || /[\t ]/.test(token)) return undefined;
  }
  return close;
}
