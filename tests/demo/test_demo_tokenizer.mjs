// The demo model's tokenizer, loaded by an independent implementation
// (@lenml/tokenizers, the transformers.js port): it must turn every held-out
// conversation back into the very ids train.py produced with HF tokenizers,
// and its chat template must give the prompt ids of the greedy samples.
// This pins the tokenizer.json layout our C tokenizer is to load.
import { TokenizerLoader } from "@lenml/tokenizers";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const read = (p) => JSON.parse(fs.readFileSync(path.join(root, p), "utf8"));
const tok = TokenizerLoader.fromPreTrained({
  tokenizerJSON: read("models/demo/tokenizer.json"),
  tokenizerConfig: read("models/demo/tokenizer_config.json"),
});
const IM_START = 1, IM_END = 2;

const held = fs.readFileSync(path.join(root, "tests/fixtures/demo/heldout.jsonl"), "utf8")
  .split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
assert.equal(held.length, 200);
let cjk = 0;
for (const [i, c] of held.entries()) {
  const text = tok.decode(c.ids, { skip_special_tokens: false });
  assert.deepEqual(tok.encode(text, { add_special_tokens: false }), c.ids, `conversation ${i}: ${text}`);
  // the scored part is exactly the answer: it follows "<|im_start|>assistant\n"
  // and ends on <|im_end|>
  const head = tok.decode(c.ids.slice(0, c.n_prompt), { skip_special_tokens: false });
  assert.ok(head.startsWith("<|im_start|>user\n") && head.endsWith("<|im_end|>\n<|im_start|>assistant\n"), head);
  assert.equal(c.ids[c.ids.length - 1], IM_END);
  assert.equal(c.ids.slice(c.n_prompt).filter((t) => t === IM_START || t === IM_END).length, 1);
  const answer = tok.decode(c.ids.slice(c.n_prompt), { skip_special_tokens: true });
  assert.match(answer, /^《[^》\n]+》\n([\u4e00-\u9fff]{5}|[\u4e00-\u9fff]{7})，/u, answer);
  cjk += [...answer].filter((ch) => /[\u4e00-\u9fff]/u.test(ch)).length;
}

for (const s of read("tests/fixtures/demo/samples.json")) {
  const ids = tok.apply_chat_template([{ role: "user", content: s.prompt }],
                                      { add_generation_prompt: true, tokenize: true });
  assert.deepEqual(Array.from(ids), s.prompt_ids, s.prompt);
  assert.equal(tok.decode(s.greedy_ids, { skip_special_tokens: true }), s.greedy_text);
}
console.log(`tokenizer ok: 200 held-out conversations round-trip (${cjk} CJK characters in answers), sample prompts match`);
