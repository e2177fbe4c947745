// Subscribes to a project's taskEvents with the graphql-ws client and prints each event as a JSON line.
// Usage: node subscribe.mjs <ws url> <access token> <project id> <events to wait for>
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const [url, token, projectId, count] = process.argv.slice(2);
const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { authorization: `Bearer ${token}` },
  retryAttempts: 0,
});
const query = `subscription($projectId: ID!) {
  taskEvents(projectId: $projectId, after: "0-0") { cursor kind task { title } actor { name } }
}`;

let received = 0;
const timer = setTimeout(() => { console.error("timed out"); process.exit(2); }, 30_000);
client.subscribe({ query, variables: { projectId } }, {
  next: (result) => {
    if (result.errors) { console.error(JSON.stringify(result.errors)); process.exit(1); }
    console.log(JSON.stringify(result.data.taskEvents));
    if (++received === Number(count)) { clearTimeout(timer); client.dispose(); process.exit(0); }
  },
  error: (error) => { console.error(String(error?.reason ?? error)); process.exit(1); },
  complete: () => {},
});
