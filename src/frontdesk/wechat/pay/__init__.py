"""WeChat Pay API v3: signing, orders, codepay, refunds, notifications, trade bills."""
