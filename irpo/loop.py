def run(cfg):
    from irpo.config import validate
    validate(cfg)
    print("ok", cfg.task, cfg.alpha, cfg.model.path)
