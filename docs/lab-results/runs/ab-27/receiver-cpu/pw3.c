#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <time.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
int main(int argc,char**argv){
  int mode=atoi(argv[1]); size_t total=(size_t)1<<30, N=total>>12;
  char *buf=aligned_alloc(4096,1<<19); memset(buf,1,1<<19);
  int fd=open("/dev/shm/pwtest3",O_RDWR|O_CREAT|O_TRUNC,0600); ftruncate(fd,total);
  pid_t child=0; int pp[2]; pipe(pp);
  if(mode==3){ child=fork(); if(!child){ char*m=mmap(0,total,PROT_READ|PROT_WRITE,MAP_SHARED,fd,0); (void)m; write(pp[1],"x",1); pause(); _exit(0);} char c; read(pp[0],&c,1);} 
  double f=0;
  if(mode==4){ char*m=mmap(0,total,PROT_READ|PROT_WRITE,MAP_SHARED,fd,0); (void)m; double t0=now(); fallocate(fd,0,0,total); f=now()-t0; }
  if(mode==5){ char*m=mmap(0,total,PROT_READ|PROT_WRITE|0,MAP_SHARED|MAP_NORESERVE,fd,0); (void)m; }
  double t=now();
  for(size_t i=0;i<N;i++){ size_t p=(i<N/2)?2*i:2*(i-N/2)+1; memset(buf+(i%128)*4096,i,64); pwrite(fd,buf+(i%128)*4096,4096,p<<12);} 
  double a=now()-t;
  printf("mode %d: %.3f s (%.2f us/page) fallocate %.3f\n",mode,a,a/N*1e6,f);
  if(child) kill(child,9);
  unlink("/dev/shm/pwtest3");
}
