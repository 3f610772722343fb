package app;

import java.util.Map;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.RestController;

/** The {{service_code}} service: an HTTP API built with Spring Boot. */
@SpringBootApplication
@RestController
public class Application {

    @GetMapping("/healthz")
    public Map<String, String> healthz() {
        return Map.of("status", "ok");
    }

    @GetMapping("/")
    public Map<String, String> index() {
        return Map.of("service", "{{service_code}}");
    }

    public static void main(String[] args) {
        SpringApplication.run(Application.class, args);
    }
}
