// The sample has one page (pages/live); its streaming logic is in utils/.
App({
  globalData: {
    // The publisher's address: https:// in production (a request and a
    // socket domain of the mini-program, with a certificate from a public CA).
    server: 'https://publisher.example.com',
    key: 'testkey',
  },
});
