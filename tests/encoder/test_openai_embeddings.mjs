// The official `openai` npm client against `inferd serve` on an encoder
// folder (XLM-R with sentence-transformers pooling files): embeddings.create
// with token-id inputs — the client asks for base64 and decodes it itself —
// and with encoding_format float; vectors against transformers' mean-pooled,
// normalized reference (cosine >= 0.9999); usage; the client's error class
// for a 400 (chat on an embedding model, dimensions it cannot give).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import OpenAI from 'openai';

const INFERD = process.env.INFERD || 'build/inferd';
const failures = [];
function check(name, cond, detail) {
  console.log((cond ? 'ok   ' : 'FAIL ') + name);
  if (!cond) {
    failures.push(name);
    if (detail !== undefined) console.log('     ' + JSON.stringify(detail).slice(0, 600));
  }
}
const cosine = (u, v) => {
  let d = 0, a = 0, b = 0;
  for (let i = 0; i < u.length; i++) { d += u[i] * v[i]; a += u[i] * u[i]; b += v[i] * v[i]; }
  return d / Math.sqrt(a * b);
};

const golden = JSON.parse(readFileSync('tests/fixtures/encoder/golden/xlmr_st.json', 'utf8'));
const ids = golden.inputs.map((s) => s.input_ids);
const srv = spawn(INFERD, ['serve', 'tests/fixtures/encoder/models/xlmr_st', '--host', '127.0.0.1', '--port', '0',
  '--served-model-name', 'tiny-embed', '--threads', '2'], { stdio: ['ignore', 'pipe', 'inherit'] });
let out = '';
srv.stdout.setEncoding('utf8');
await new Promise((resolve, reject) => {
  srv.stdout.on('data', (d) => { out += d; if (/ready/.test(out)) resolve(); });
  srv.on('exit', (c) => reject(new Error('server exited ' + c + ': ' + out)));
});
const port = Number(/listening on http:\/\/[^ ]*:(\d+)/.exec(out)[1]);
const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'none', maxRetries: 0 });

try {
  const e = await client.embeddings.create({ model: 'tiny-embed', input: ids });
  check('embeddings.create (base64 under the hood): one vector per input, in order',
    e.object === 'list' && e.data.length === ids.length && e.data.every((d, i) => d.index === i && d.object === 'embedding'), e.data.length);
  const worst = Math.min(...e.data.map((d, i) => cosine(d.embedding, golden.mean_normalized[i])));
  check('vectors match transformers (cosine >= 0.9999)', worst >= 0.9999, worst);
  check('usage.prompt_tokens counts every token', e.usage.prompt_tokens === ids.flat().length && e.usage.total_tokens === e.usage.prompt_tokens, e.usage);
  check('model echoed', e.model === 'tiny-embed', e.model);

  const f = await client.embeddings.create({ model: 'tiny-embed', input: ids[2], encoding_format: 'float' });
  check('encoding_format float, a single list of ids is one input',
    f.data.length === 1 && f.data[0].embedding.length === 32 && cosine(f.data[0].embedding, golden.mean_normalized[2]) >= 0.9999, f.data.length);
  const norm = Math.sqrt(f.data[0].embedding.reduce((s, x) => s + x * x, 0));
  check('normalized (Normalize module)', Math.abs(norm - 1) < 1e-5, norm);

  try {
    await client.embeddings.create({ model: 'tiny-embed', input: ids[0], dimensions: 8 });
    check('dimensions 8 refused', false);
  } catch (err) {
    check('dimensions 8 refused with BadRequestError', err instanceof OpenAI.BadRequestError && /dimensions/.test(err.message), err.message);
  }
  try {
    await client.chat.completions.create({ model: 'tiny-embed', messages: [{ role: 'user', content: 'hi' }] });
    check('chat on an embedding model refused', false);
  } catch (err) {
    check('chat on an embedding model: BadRequestError naming /v1/embeddings', err instanceof OpenAI.BadRequestError && /embeddings/.test(err.message), err.message);
  }
  try {
    await client.embeddings.create({ model: 'tiny-embed', input: 'text needs a tokenizer' });
    check('text without a tokenizer refused', false);
  } catch (err) {
    check('text without a tokenizer: BadRequestError asking for token ids', err instanceof OpenAI.BadRequestError && /token ids/.test(err.message), err.message);
  }
} catch (err) {
  check('no unexpected exception', false, String(err));
} finally {
  srv.kill('SIGTERM');
}
const code = await new Promise((r) => srv.on('exit', r));
check('server exits 0 on SIGTERM', code === 0, code);
console.log(`\n${failures.length} failures`);
process.exit(failures.length ? 1 : 0);
