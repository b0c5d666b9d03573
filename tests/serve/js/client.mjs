// The official openai npm package against a real `tunesmith serve` (started by tests/serve/test_node_client.py).
// node client.mjs CHAT_URL CHAT_MODEL TOOL_URL TOOL_MODEL → one JSON object on stdout with what each call got;
// the Python test asserts on it.
import OpenAI from "openai";

const [chatUrl, chatModel, toolUrl, toolModel] = process.argv.slice(2);
const chat = new OpenAI({ baseURL: chatUrl, apiKey: "none", maxRetries: 0 });
const tools = new OpenAI({ baseURL: toolUrl, apiKey: "none", maxRetries: 0 });
const out = {};

out.models = (await chat.models.list()).data.map((m) => m.id);

const question = [{ role: "user", content: "What is the capital of France?" }];
const r = await chat.chat.completions.create({ model: chatModel, messages: question, temperature: 0, max_tokens: 12 });
out.chat = { content: r.choices[0].message.content, finish_reason: r.choices[0].finish_reason, usage: r.usage };

const stream = await chat.chat.completions.create({
  model: chatModel, messages: question, temperature: 0, max_tokens: 12, stream: true,
  stream_options: { include_usage: true },
});
const pieces = [];
let usage = null;
let finish = null;
for await (const chunk of stream) {
  if (chunk.usage) usage = chunk.usage;
  for (const c of chunk.choices) {
    if (c.delta.content) pieces.push(c.delta.content);
    if (c.finish_reason) finish = c.finish_reason;
  }
}
out.stream = { text: pieces.join(""), pieces: pieces.length, finish_reason: finish, usage };

// Structured output: the answer is JSON valid against the schema; parse() reads it into message.parsed.
const city = {
  type: "object",
  properties: { city: { type: "string", maxLength: 40 }, country: { type: "string", maxLength: 40 } },
  required: ["city", "country"], additionalProperties: false,
};
const parsed = await chat.chat.completions.parse({
  model: chatModel, temperature: 0, max_tokens: 60,
  messages: [{ role: "user", content: "Which city is the capital of France? Answer in JSON." }],
  response_format: { type: "json_schema", json_schema: { name: "capital", schema: city, strict: true } },
});
out.json = { content: parsed.choices[0].message.content, parsed: parsed.choices[0].message.parsed,
             finish_reason: parsed.choices[0].finish_reason };

// Tools round trip on the tiny tool model: a forced call, the tool's result sent back, an answer.
const weather = [{
  type: "function",
  function: {
    name: "get_weather", description: "Current weather in a city",
    parameters: { type: "object", properties: { city: { type: "string", enum: ["Paris", "Rome", "Oslo"] } },
                  required: ["city"], additionalProperties: false },
  },
}];
const messages = [{ role: "user", content: "What is the weather in Paris?" }];
const call = await tools.chat.completions.create({
  model: toolModel, messages, tools: weather, tool_choice: { type: "function", function: { name: "get_weather" } },
  temperature: 0, max_tokens: 60,
});
const asked = call.choices[0].message;
messages.push(asked);
for (const tc of asked.tool_calls ?? []) {
  messages.push({ role: "tool", tool_call_id: tc.id, content: JSON.stringify({ temperature_c: 18 }) });
}
const answer = await tools.chat.completions.create({ model: toolModel, messages, tools: weather, temperature: 0,
                                                     max_tokens: 8 });
out.tools = { call: asked, finish_reason: call.choices[0].finish_reason, answer: answer.choices[0].message,
              answer_finish: answer.choices[0].finish_reason };

// The same forced call streamed: the SDK's stream helper assembles the tool_call deltas.
const runner = tools.chat.completions.stream({
  model: toolModel, messages: messages.slice(0, 1), tools: weather, tool_choice: "required", temperature: 0,
  max_tokens: 60,
});
const final = await runner.finalChatCompletion();
out.tools_stream = { message: final.choices[0].message, finish_reason: final.choices[0].finish_reason };

process.stdout.write(JSON.stringify(out));
