// describe turns the streamer's events and the server's status messages
// into a line for the page, in Chinese; error says it needs the user.

function describe(e) {
  switch (e.type) {
    case 'state':
      return {
        starting: { text: '正在连接…' },
        live: { text: '直播中' },
        reconnecting: { text: `连接中断，正在重连：${e.text}` },
        stopping: { text: '正在发送剩余音频并结束…' },
        stopped: { text: e.text ? `已结束：${e.text}` : '已结束' },
        failed: { text: `失败：${e.text}`, error: true },
      }[e.state] || null;
    case 'server':
      return describeServer(e.msg);
    case 'recorder':
      return {
        start: { text: '录音已开始' },
        restart: { text: '录音器已重新开始（10 分钟上限或系统停止），直播继续' },
        pause: { text: '录音已暂停（来电或切到后台）' },
        resume: { text: '录音已恢复' },
        interrupted: { text: '录音被打断（来电等）' },
        error: { text: `录音器出错：${e.text}`, error: true },
      }[e.what] || null;
    case 'app':
      return { text: e.what === 'hide' ? '小程序已切到后台：音频先排队' : '回到前台：发送排队的音频' };
    case 'skipped':
      return { text: `服务器跳过了一段迟到的音频：${e.text}`, error: true };
    default:
      return null;
  }
}

// describeServer: the status messages of GET /ws (see the README).
function describeServer(m) {
  switch (m.type) {
    case 'ready':
      return { text: `已连接服务器，直播 ID “${m.id}”` };
    case 'status':
      if (m.state === 'waiting') return { text: '服务器正在等待 RTMP 服务器，发送变慢' };
      if (m.upstream === 'not answering') return { text: 'RTMP 服务器没有响应；音频已保存，恢复后发送' };
      return {
        publishing: { text: `推流中：已送达 ${Number(m.seconds || 0).toFixed(1)} 秒` },
        starting: { text: '正在开始推流…' },
        restarting: { text: '推流正在重连 RTMP 服务器…' },
      }[m.ffmpeg] || { text: '已连接' };
    case 'error':
      return { text: m.errmsg || '服务器报告错误', error: true };
    default:
      return null;
  }
}

// clock formats milliseconds as m:ss.
function clock(ms) {
  const s = Math.floor(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

module.exports = { describe, clock };
