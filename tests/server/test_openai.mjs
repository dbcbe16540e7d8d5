// End-to-end with the official `openai` npm client against `inferd serve`
// on loopback (port picked by the kernel, API key required): chat and
// completions, streaming and not, usage, logprobs, n, stop, seed, the
// stream helper, models.retrieve, and the client's error classes for 400,
// 401 and 404.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import OpenAI from 'openai';

const INFERD = process.env.INFERD || 'build/inferd';
const KEY = 'test-key-' + Math.random().toString(36).slice(2);
const failures = [];
function check(name, cond, detail) {
  console.log((cond ? 'ok   ' : 'FAIL ') + name);
  if (!cond) {
    failures.push(name);
    if (detail !== undefined) console.log('     ' + JSON.stringify(detail).slice(0, 600));
  }
}

const srv = spawn(INFERD, ['serve', 'tests/fixtures/models/qwen3', '--host', '127.0.0.1', '--port', '0',
  '--served-model-name', 'tiny', '--kv-cache-memory', '64MiB', '--threads', '2', '--api-key', KEY],
  { stdio: ['ignore', 'pipe', 'inherit'] });
let out = '';
srv.stdout.setEncoding('utf8');
const ready = new Promise((resolve, reject) => {
  srv.stdout.on('data', (d) => { out += d; if (/ready/.test(out)) resolve(); });
  srv.on('exit', (c) => reject(new Error('server exited ' + c + ': ' + out)));
});
await ready;
const port = Number(/listening on http:\/\/[^ ]*:(\d+)/.exec(out)[1]);
const baseURL = `http://127.0.0.1:${port}/v1`;
const client = new OpenAI({ baseURL, apiKey: KEY, maxRetries: 0, timeout: 60000 });
const messages = [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Tell me a story.' }];

try {
  const models = await client.models.list();
  check('models.list has the served model', models.data.some((m) => m.id === 'tiny'), models.data);
  const withId = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 2 });
  check('chat completion has a _request_id', typeof withId._request_id === 'string'
    && withId._request_id.length > 0, withId._request_id);
  const one = await client.models.retrieve('tiny');
  check('models.retrieve gives the served model', one.id === 'tiny' && one.object === 'model', one);
  try {
    await client.models.retrieve('other');
    check('models.retrieve of another id throws NotFoundError', false);
  } catch (e) {
    check('models.retrieve of another id throws NotFoundError', e instanceof OpenAI.NotFoundError
      && e.code === 'model_not_found', String(e));
  }

  // Chat, not streamed and streamed: same greedy text, usage, role first.
  const greedy = { model: 'tiny', messages, max_tokens: 20, temperature: 0, ignore_eos: true };
  const c = await client.chat.completions.create(greedy);
  check('chat.completions.create', c.object === 'chat.completion' && c.choices[0].message.role === 'assistant'
    && typeof c.choices[0].message.content === 'string' && c.choices[0].finish_reason === 'length', c);
  check('chat usage', c.usage.completion_tokens === 20 && c.usage.total_tokens === c.usage.prompt_tokens + 20, c.usage);

  const stream = await client.chat.completions.create({ ...greedy, stream: true, stream_options: { include_usage: true } });
  let text = '', first = null, finish = null, usage = null, n = 0;
  for await (const chunk of stream) {
    n++;
    if (!first) first = chunk;
    if (chunk.usage) usage = chunk.usage;
    for (const ch of chunk.choices) {
      text += ch.delta.content || '';
      if (ch.finish_reason) finish = ch.finish_reason;
    }
  }
  check('stream: first delta carries the role', first.choices[0].delta.role === 'assistant', first);
  check('stream: same text as not streamed', text === c.choices[0].message.content, [text, c.choices[0].message.content]);
  check('stream: finish_reason and include_usage', finish === 'length' && usage && usage.completion_tokens === 20, usage);
  check('stream: object and id', first.object === 'chat.completion.chunk' && first.id.startsWith('chatcmpl-'));

  // The SDK's stream helper accumulates the same message.
  const runner = client.chat.completions.stream(greedy);
  const fin = await runner.finalChatCompletion();
  check('chat.completions.stream helper', fin.choices[0].message.content === c.choices[0].message.content, fin.choices[0]);

  // Completions, both ways.
  const cp = { model: 'tiny', prompt: 'Once upon a time', max_tokens: 16, temperature: 0, ignore_eos: true };
  const r1 = await client.completions.create(cp);
  let t2 = '', fin2 = null;
  for await (const chunk of await client.completions.create({ ...cp, stream: true })) {
    t2 += chunk.choices[0]?.text || '';
    if (chunk.choices[0]?.finish_reason) fin2 = chunk.choices[0].finish_reason;
  }
  check('completions.create', r1.object === 'text_completion' && r1.usage.completion_tokens === 16, r1);
  check('completions stream equals non-stream', t2 === r1.choices[0].text && fin2 === 'length', [t2, r1.choices[0].text]);

  // n, logprobs, stop, seed.
  const nn = await client.chat.completions.create({ ...greedy, n: 3, temperature: 0.9, seed: 42 });
  const nn2 = await client.chat.completions.create({ ...greedy, n: 3, temperature: 0.9, seed: 42 });
  check('n=3 gives 3 choices', nn.choices.length === 3 && nn.choices.map((x) => x.index).join() === '0,1,2');
  check('seed reproduces all choices', nn.choices.map((x) => x.message.content).join('|') ===
    nn2.choices.map((x) => x.message.content).join('|'));
  const idx = new Set();
  for await (const chunk of await client.chat.completions.create({ ...greedy, n: 2, stream: true })) {
    for (const ch of chunk.choices) idx.add(ch.index);
  }
  check('n=2 streamed: both indexes appear', idx.has(0) && idx.has(1), [...idx]);
  const lp = await client.chat.completions.create({ ...greedy, max_tokens: 4, logprobs: true, top_logprobs: 2 });
  const content = lp.choices[0].logprobs.content;
  check('chat logprobs with top_logprobs', content.length === 4 && content.every((x) => x.top_logprobs.length === 2
    && typeof x.token === 'string' && x.logprob <= 0), content[0]);
  const whole = c.choices[0].message.content;
  const stopStr = whole.slice(6, 9);
  const st = await client.chat.completions.create({ ...greedy, stop: [stopStr] });
  check('stop string', st.choices[0].finish_reason === 'stop' && st.choices[0].message.content === whole.slice(0, whole.indexOf(stopStr)),
    [whole, stopStr, st.choices[0].message.content]);
  const clp = await client.completions.create({ ...cp, max_tokens: 3, logprobs: 2 });
  check('completions logprobs', clp.choices[0].logprobs.tokens.length === 3
    && clp.choices[0].logprobs.top_logprobs.every((o) => Object.keys(o).length >= 1), clp.choices[0].logprobs);

  // Error classes.
  try {
    await client.chat.completions.create({ ...greedy, temperature: 'hot' });
    check('400 raises', false);
  } catch (e) {
    check('400 -> BadRequestError with the param', e instanceof OpenAI.BadRequestError && e.status === 400
      && e.error?.param === 'temperature', { status: e.status, error: e.error });
  }
  try {
    await client.chat.completions.create({ ...greedy, model: 'gpt-5' });
    check('404 raises', false);
  } catch (e) {
    check('unknown model -> NotFoundError', e instanceof OpenAI.NotFoundError && e.code === 'model_not_found', e.error);
  }
  try {
    await new OpenAI({ baseURL, apiKey: 'wrong', maxRetries: 0 }).chat.completions.create(greedy);
    check('401 raises', false);
  } catch (e) {
    check('wrong key -> AuthenticationError', e instanceof OpenAI.AuthenticationError && e.status === 401, e.error);
  }
  try {
    await client.completions.create({ ...cp, prompt: Array(1100).fill(7), max_tokens: 1 });
    check('too long raises', false);
  } catch (e) {
    check('prompt too long -> BadRequestError naming 1024', e instanceof OpenAI.BadRequestError && /1024/.test(e.message), e.message);
  }
  const after = await client.completions.create({ ...cp, max_tokens: 2 });
  check('still serving after errors', after.choices.length === 1);
} catch (e) {
  check('no unexpected exception', false, String(e && e.stack || e));
} finally {
  srv.kill('SIGTERM');
  const [code] = await once(srv, 'exit');
  check('server exits 0 on SIGTERM', code === 0, code);
}
console.log(`\n${failures.length} failures`);
process.exit(failures.length ? 1 : 0);
