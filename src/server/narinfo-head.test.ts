import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  closesConnection,
  emptyHead,
  HEAD_FOREIGN,
  HEAD_INCOMPLETE,
  HEAD_OK,
  MAX_HEAD_BYTES,
  parseNarinfoHead,
  type HeadResult,
  type NarinfoHead,
} from './narinfo-head.ts';

const HASH = '0901za50h1wdhz2d2986pv72plcdrr5q';
const LINE = `GET /${HASH}.narinfo HTTP/1.1\r\n`;

function parse(text: string, start = 0): { result: HeadResult; head: NarinfoHead } {
  const head = emptyHead();
  return { result: parseNarinfoHead(text, start, head), head };
}

describe('parseNarinfoHead', () => {
  test('accepts GET and HEAD with a Host, and says where the head ends', () => {
    const text = `${LINE}Host: cache\r\nUser-Agent: curl/8.5.0 Nix/2.8.0\r\nAccept: */*\r\n\r\n`;
    const get = parse(text);
    assert.equal(get.result, HEAD_OK);
    assert.deepEqual(get.head, {
      method: 'GET',
      url: `/${HASH}.narinfo`,
      close: false,
      authorization: undefined,
      end: text.length,
    });
    const head = parse(`HEAD /${HASH}.narinfo HTTP/1.1\r\nhost: x\r\n\r\n`);
    assert.equal(head.result, HEAD_OK);
    assert.equal(head.head.method, 'HEAD');
  });

  test('parses a pipelined head from its offset and leaves the rest', () => {
    const first = `${LINE}Host: a\r\n\r\n`;
    const second = `HEAD /${HASH}.narinfo HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n`;
    const text = `${first}${second}GET /nix-cache-info`;
    const one = parse(text);
    assert.equal(one.result, HEAD_OK);
    assert.equal(one.head.end, first.length);
    const two = parse(text, one.head.end);
    assert.equal(two.result, HEAD_OK);
    assert.equal(two.head.method, 'HEAD');
    assert.equal(two.head.close, true);
    assert.equal(two.head.end, first.length + second.length);
    assert.equal(parse(text, two.head.end).result, HEAD_INCOMPLETE);
  });

  test('reads Connection and Authorization in any case, trimmed', () => {
    const { result, head } = parse(
      `${LINE}hOsT: x\r\nCONNECTION:\tKeep-Alive , Close \r\nauthorization:  Bearer firn_abc \r\n\r\n`,
    );
    assert.equal(result, HEAD_OK);
    assert.equal(head.close, true);
    assert.equal(head.authorization, 'Bearer firn_abc');
    // The fields of one head never leak into the next parsed into the same object.
    assert.equal(parse(`${LINE}Host: x\r\n\r\n`).head.close, false);
    const reused = emptyHead();
    parseNarinfoHead(
      `${LINE}Host: x\r\nConnection: close\r\nAuthorization: Basic x\r\n\r\n`,
      0,
      reused,
    );
    assert.equal(parseNarinfoHead(`${LINE}Host: x\r\n\r\n`, 0, reused), HEAD_OK);
    assert.equal(reused.close, false);
    assert.equal(reused.authorization, undefined);
  });

  test('an unfinished head is incomplete, whatever it holds', () => {
    for (const text of [
      '',
      'G',
      LINE,
      `${LINE}Host: x\r\n`,
      `${LINE}Host: x\r\n\r`,
      `${LINE}Host: x\n\n`,
      `${LINE}Host: x\r\nX: ${'a'.repeat(20_000)}`,
    ])
      assert.equal(parse(text).result, HEAD_INCOMPLETE, JSON.stringify(text.slice(0, 80)));
  });

  const foreign: readonly (readonly [string, string])[] = [
    ['another method', `POST /${HASH}.narinfo HTTP/1.1\r\nHost: x\r\n\r\n`],
    ['a lower-case method', `get /${HASH}.narinfo HTTP/1.1\r\nHost: x\r\n\r\n`],
    ['HTTP/1.0', `GET /${HASH}.narinfo HTTP/1.0\r\nHost: x\r\n\r\n`],
    ['HTTP/2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'],
    ['two spaces', `GET  /${HASH}.narinfo HTTP/1.1\r\nHost: x\r\n\r\n`],
    ['a trailing space', `GET /${HASH}.narinfo HTTP/1.1 \r\nHost: x\r\n\r\n`],
    ['a leading empty line', `\r\n${LINE}Host: x\r\n\r\n`],
    ['a query string', `GET /${HASH}.narinfo?a=1 HTTP/1.1\r\nHost: x\r\n\r\n`],
    ['absolute form', `GET http://x/${HASH}.narinfo HTTP/1.1\r\nHost: x\r\n\r\n`],
    ['percent-encoding', `GET /%30${HASH.slice(1)}.narinfo HTTP/1.1\r\nHost: x\r\n\r\n`],
    [
      'a letter outside nix-base32',
      `GET /${HASH.slice(0, 31)}e.narinfo HTTP/1.1\r\nHost: x\r\n\r\n`,
    ],
    ['upper case', `GET /${HASH.toUpperCase()}.narinfo HTTP/1.1\r\nHost: x\r\n\r\n`],
    ['a .ls', `GET /${HASH}.ls HTTP/1.1\r\nHost: x\r\n\r\n`],
    ['no Host', `${LINE}\r\n`],
    ['two Hosts', `${LINE}Host: x\r\nHost: y\r\n\r\n`],
    ['Content-Length', `${LINE}Host: x\r\nContent-Length: 0\r\n\r\n`],
    ['Transfer-Encoding', `${LINE}Host: x\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n`],
    ['Expect', `${LINE}Host: x\r\nExpect: 100-continue\r\n\r\n`],
    ['Upgrade', `${LINE}Host: x\r\nUpgrade: h2c\r\n\r\n`],
    ['Connection: upgrade', `${LINE}Host: x\r\nConnection: Upgrade\r\n\r\n`],
    ['an odd Connection', `${LINE}Host: x\r\nConnection: clo se\r\n\r\n`],
    ['Proxy-Connection', `${LINE}Host: x\r\nProxy-Connection: close\r\n\r\n`],
    ['two Authorizations', `${LINE}Host: x\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n`],
    ['obs-fold', `${LINE}Host: x\r\nX-A: a\r\n b\r\n\r\n`],
    ['a bare LF', `${LINE}Host: x\nX: y\r\n\r\n`],
    ['a bare CR', `${LINE}Host: x\rX: y\r\n\r\n`],
    ['NUL', `${LINE}Host: x\r\nX: a\0b\r\n\r\n`],
    ['a control character', `${LINE}Host: x\r\nX: a\x01b\r\n\r\n`],
    ['DEL', `${LINE}Host: x\r\nX: a\x7fb\r\n\r\n`],
    ['a byte above ASCII', `${LINE}Host: x\r\nX: \xe9\r\n\r\n`],
    ['a space before the colon', `${LINE}Host : x\r\n\r\n`],
    ['no colon', `${LINE}Host: x\r\nX-A\r\n\r\n`],
    ['an empty name', `${LINE}Host: x\r\n: y\r\n\r\n`],
    ['a separator in the name', `${LINE}Host: x\r\nX(A): y\r\n\r\n`],
    ['too long', `${LINE}Host: x\r\nX: ${'a'.repeat(MAX_HEAD_BYTES)}\r\n\r\n`],
  ];
  for (const [name, text] of foreign) {
    test(`leaves to node:http: ${name}`, () => {
      assert.equal(parse(text).result, HEAD_FOREIGN);
    });
  }

  test('the size limit is on the whole head, blank line included', () => {
    const base = `${LINE}Host: x\r\nX: \r\n\r\n`;
    const fits = `${LINE}Host: x\r\nX: ${'a'.repeat(MAX_HEAD_BYTES - base.length)}\r\n\r\n`;
    assert.equal(fits.length, MAX_HEAD_BYTES);
    assert.equal(parse(fits).result, HEAD_OK);
    assert.equal(parse(fits.replace('X: ', 'X: a')).result, HEAD_FOREIGN);
  });

  test('accepts what node:http accepts in values: tabs, spaces, punctuation', () => {
    const { result } = parse(
      `${LINE}Host: [::1]:8080\r\nX:\t v \t\r\nY:\r\nZ: !"#$%&'()*+,-./:;<=>?@[\\]^_\`{|}~\r\n\r\n`,
    );
    assert.equal(result, HEAD_OK);
  });
});

describe('closesConnection', () => {
  test('close anywhere in the list closes; keep-alive and other tokens keep', () => {
    assert.equal(closesConnection('close'), true);
    assert.equal(closesConnection(' Keep-Alive, CLOSE'), true);
    assert.equal(closesConnection('keep-alive'), false);
    assert.equal(closesConnection('TE'), false);
    assert.equal(closesConnection(''), false);
    assert.equal(closesConnection('keep-alive, Upgrade'), undefined);
    assert.equal(closesConnection('close x'), undefined);
  });
});
