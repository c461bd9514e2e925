// Server-Sent Events read from a fetch() body: EventSource cannot send the
// Authorization header, so the dashboard parses the stream itself.

// "field: value" lines; a blank line ends a message; lines starting with ":" are comments.
export class SseParser {
  constructor() {
    this.buffer = "";
    this.reset();
  }

  reset() {
    this.id = null;
    this.event = "message";
    this.data = [];
  }

  // Feed a decoded chunk; returns the messages it completed: {id, event, data}.
  push(chunk) {
    this.buffer += chunk;
    // A trailing "\r" may be half of "\r\n": keep it for the next chunk.
    const end = this.buffer.endsWith("\r") ? this.buffer.length - 1 : this.buffer.length;
    const lines = this.buffer.slice(0, end).replace(/\r\n?/g, "\n").split("\n");
    this.buffer = lines.pop() + this.buffer.slice(end);
    const messages = [];
    for (const line of lines) {
      if (line === "") {
        if (this.data.length) {
          messages.push({ id: this.id, event: this.event, data: this.data.join("\n") });
        }
        this.reset();
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") this.data.push(value);
        else if (field === "event") this.event = value;
        else if (field === "id" && !value.includes("\0")) this.id = value;
      }
    }
    return messages;
  }
}

// Messages of an open event-stream response, as they arrive.
export async function* readEvents(response) {
  const parser = new SseParser();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    yield* parser.push(value);
  }
}
