// Transport check: open the WebSocket, ping once a second, show the round trip.
const state = document.getElementById('state');
const rtt = document.getElementById('rtt');
const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
let sent = 0;

function connect(delay) {
  const ws = new WebSocket(`${proto}//${location.host}/v1/ws`, 'parley.v1.json');
  let timer;
  ws.onopen = () => {
    state.textContent = 'open';
    delay = 1000;
    timer = setInterval(() => { sent = performance.now(); ws.send('{"type":"ping"}'); }, 1000);
  };
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type === 'pong') rtt.textContent = `${(performance.now() - sent).toFixed(1)} ms`;
  };
  ws.onclose = (ev) => {
    clearInterval(timer);
    state.textContent = `closed (${ev.code}), retrying`;
    const wait = Math.random() * Math.min(60000, delay); // full jitter
    setTimeout(() => connect(Math.min(60000, delay * 2)), wait);
  };
}
connect(1000);
